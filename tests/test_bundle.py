"""The MONAI bundle through its configs: train, resume, transfer, evaluate, infer, export, torchrun.

Everything runs on a few small synthetic radiographs and width-8 networks; the configs are the
ones shipped in ``bundles/kneel_landmarks/configs``, run with MONAI's ``ConfigWorkflow`` (the
engine behind ``python -m monai.bundle run``) or, for multi-process training, ``torchrun``.
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, messages
from monai.bundle import ConfigWorkflow, ckpt_export
from monai.data import load_net_with_metadata

from kneel_monai.data import build_datalists
from kneel_monai.data.datalists import read_datalist
from kneel_monai.inference import KneelPredictor
from kneel_monai.io import read_radiograph
from kneel_monai.metrics import landmark_errors_mm
from kneel_monai.model_io import load_model, save_model
from kneel_monai.networks import build_network
from kneel_monai.synthetic.generate import generate_radiograph, write_radiograph
from kneel_monai.training import STAGES, fold_training_argv, latest_checkpoint
from kneel_monai.transforms import PercentileNormalise

BUNDLE = REPO_ROOT / "bundles" / "kneel_landmarks"
CONFIGS = BUNDLE / "configs"
NET = {"preset": "paper", "width": 8, "depth": 3}
TINY = dict(stage="landmarks_cpu", max_epochs=1, epoch_length=2, batch_size=2, cache=False, network_args=NET)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def workflow(names, run_id, **override) -> ConfigWorkflow:
    return ConfigWorkflow(config_file=[str(CONFIGS / f"{n}.json") for n in names],
                          meta_file=str(CONFIGS / "metadata.json"), logging_file=False, run_id=run_id,
                          workflow_type=None, **override)


def run(names, run_id, **override) -> ConfigWorkflow:
    wf = workflow(names, run_id, **override)
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


TORCH_THREADS = 1  # see conftest.torch_threads


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """4 small synthetic radiographs (8 knees) and their datalists with 2 folds."""
    root = tmp_path_factory.mktemp("bundle_data")
    for seed in range(4):
        write_radiograph(generate_radiograph(seed, spacing_mm=0.5, size=(700, 880)), root / "images", f"r{seed}")
    lists = build_datalists(root / "images", n_folds=2, progress=False)
    assert not lists.bad_files
    lists.write(root / "lists")
    return root


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Untrained width-8 ROI and landmark models in the project's format (CPU geometry)."""
    root = tmp_path_factory.mktemp("tiny_models")
    for seed, (name, stage) in enumerate((("roi", "roi_cpu"), ("landmarks", "landmarks_cpu"))):
        torch.manual_seed(seed)
        cfg = STAGES[stage]
        net = build_network(out_points=cfg.out_points, **NET)
        save_model(root / name, cfg.task, net.hparams, [net.state_dict()], cfg.preprocessing, {"test": "untrained"})
    return root


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """One epoch of 2 iterations through train.json."""
    root = tmp_path_factory.mktemp("bundle_root")
    torch.manual_seed(0)
    wf = run(["train"], "training", bundle_root=str(root), dataset_dir=str(dataset / "lists"), **TINY)
    return root, wf.parser.get_parsed_content("trainer")


def test_metadata_describes_both_models():
    meta = json.loads((CONFIGS / "metadata.json").read_text(encoding="utf-8"))
    for key in ("schema", "version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                "required_packages_version", "name", "task", "description", "authors", "copyright",
                "data_source", "data_type", "image_classes", "label_classes", "pred_classes", "intended_use",
                "references", "network_data_format"):
        assert key in meta, key
    from kneel_monai import __version__

    assert meta["version"] == __version__ and meta["version"] in meta["changelog"]
    assert any("1907.12237" in r for r in meta["references"])
    for name, points in (("landmarks", 16), ("roi", 1)):
        fmt = meta["kneel_models"][name]["network_data_format"]
        # the metadata describes the shipped model files as they are
        crop = json.loads((CONFIGS.parent / "models" / name / "model.json").read_text())["preprocessing"]["crop_size"]
        assert fmt["inputs"]["image"]["num_channels"] == 1 and fmt["inputs"]["image"]["spatial_shape"] == [crop, crop]
        pred = fmt["outputs"]["pred"]  # the zoo's output key: one channel per point, (x, y) each
        assert pred["num_channels"] == points and pred["spatial_shape"] == [2] and len(pred["channel_def"]) == points
        assert meta["kneel_models"][name]["paper_geometry"]["spatial_shape"] == [450, 450]
    assert meta["network_data_format"] == meta["kneel_models"]["landmarks"]["network_data_format"]
    assert meta["roi_network_data_format"] == meta["kneel_models"]["roi"]["network_data_format"]  # <name>_data_format
    assert meta["required_packages_version"]["kneel-monai"] == __version__  # the zoo's requirement scan reads this


def test_train_then_resume_continues_the_epoch_count(trained, dataset):
    root, trainer = trained
    assert trainer.state.epoch == 1 and trainer.state.iteration == 2
    out = root / "runs" / "landmarks_cpu_fold0"
    assert (out / "best.pt").is_file() and latest_checkpoint(out).endswith("=1.pt")
    model = load_model(root / "runs" / "model_landmarks_cpu")
    assert model.task == "landmarks" and model.preprocessing["crop_size"] == 224

    assert list((out / "tensorboard").glob("events.out.tfevents.*")), "no TensorBoard log"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = EventAccumulator(str(out / "tensorboard")).Reload().Tags()["scalars"]
    assert {"train_loss", "learning_rate", "val_pck"} <= set(logged), logged  # on disk after the epoch

    # resumed with nothing left to train: the network and the optimizer's state are the checkpoint's, tensor
    # for tensor (not a fresh network that merely counts on from epoch 1)
    saved = torch.load(latest_checkpoint(out), map_location="cpu", weights_only=False)
    wf = run(["train"], "training", bundle_root=str(root), dataset_dir=str(dataset / "lists"), **TINY)
    back = wf.parser.get_parsed_content("trainer")
    assert back.state.epoch == 1
    for key, value in saved["network"].items():
        assert torch.equal(back.network.state_dict()[key].cpu(), value), key
    state, stored = back.optimizer.state_dict()["state"], saved["optimizer"]["state"]
    assert state.keys() == stored.keys() and len(state) > 0
    for index in stored:
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(state[index][name].cpu(), stored[index][name]), (index, name)

    # resumed with a learning-rate drop at epoch 2 that the first run did not have: the drop happens
    wf = run(["train"], "training", bundle_root=str(root), dataset_dir=str(dataset / "lists"),
             **{**TINY, "max_epochs": 2, "lr_milestones": [2]})
    resumed = wf.parser.get_parsed_content("trainer")
    assert resumed.state.epoch == 2 and resumed.state.iteration == 4
    assert latest_checkpoint(out).endswith("=2.pt")
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_init_from_transfers_all_layers_but_the_last(tiny_models, dataset, tmp_path):
    wf = workflow(["train"], "training", bundle_root=str(tmp_path), dataset_dir=str(dataset / "lists"),
                  init_from=str(tiny_models / "roi"), **TINY)
    wf.initialize()
    copied = wf.parser.get_parsed_content("transfer")
    network = wf.parser.get_parsed_content("network")
    source = load_model(tiny_models / "roi").networks[0].state_dict()
    own = network.state_dict()
    assert len(copied) == len(own) - 2 and not any(k.startswith("out_conv.") for k in copied)
    for key in copied:
        torch.testing.assert_close(own[key], source[key])
    assert own["out_conv.weight"].shape[0] == 16


def test_bad_overrides_fail_before_training(dataset, tmp_path):
    wf = workflow(["train"], "training", bundle_root=str(tmp_path), dataset_dir=str(dataset / "lists"),
                  **{**TINY, "stage": "knees"})
    with pytest.raises(Exception) as info:
        wf.initialize()
    assert "unknown stage 'knees'" in messages(info.value)

    wf = workflow(["train"], "training", bundle_root=str(tmp_path), dataset_dir=str(tmp_path / "no_such_folder"),
                  **TINY)
    with pytest.raises(Exception) as info:
        wf.initialize()
    assert "no_such_folder: not a folder" in messages(info.value)
    assert not (tmp_path / "runs").exists()  # nothing was trained or written


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_evaluate_writes_the_papers_tables(tiny_models, dataset, tmp_path):
    lists = dataset / "lists"
    wf = run(["train", "evaluate"], "evaluating", bundle_root=str(tmp_path), dataset_dir=str(lists),
             stage="landmarks_cpu", model_dir=str(tiny_models / "landmarks"), eval_fold="all")
    summary = wf.parser.get_parsed_content("evaluation")
    out = tmp_path / "runs" / "landmarks_cpu_fold0" / "eval"
    items = read_datalist(lists / "landmark_datalist.json")["items"]
    assert summary["n_knees"] == len(items) == 8
    for subset in ("model_selection", "test"):
        rows = read_csv(out / f"pck_{subset}.csv")
        assert [r["setting"] for r in rows] == ["all", "KL0", "KL1", "KL2", "KL3", "KL4"]
        assert int(rows[0]["n_knees"]) == 8 and sum(int(r["n_knees"]) for r in rows[1:]) == 8
        assert {"1 mm mean", "2.5 mm std", "tibia 2 mm", "femur 1.5 mm", "% out"} <= set(rows[0])
        markdown = (out / f"pck_{subset}.md").read_text(encoding="utf-8").splitlines()
        assert markdown[0] == "| setting | 1 mm | 1.5 mm | 2 mm | 2.5 mm | % out |" and len(markdown) == 8
        assert (out / f"ced_{subset}.png").read_bytes()[:8] == PNG_MAGIC
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["n_knees"] == 8

    # the errors are those of the same network placed by the predictor's own geometry on the true centres
    predictor = KneelPredictor(tiny_models / "roi", tiny_models / "landmarks", device="cpu", refine=False,
                               fast=False)
    by_knee = {(r["image"], r["side"]): np.array([float(r[f"error_mm_{i}"]) for i in range(16)])
               for r in read_csv(out / "errors.csv")}
    for image_path in sorted({i["image"] for i in items}):
        knees = {i["side"]: np.asarray(i["landmarks_px"]) for i in items if i["image"] == image_path}
        image = read_radiograph(image_path)
        found = predictor.knee_landmarks(PercentileNormalise(5, 99)(image), {s: p[4] for s, p in knees.items()})
        spacing = np.array([[image.affine[1, 1].item(), image.affine[0, 0].item()]])
        for side, truth in knees.items():
            expected = landmark_errors_mm(found[side][0][None], truth[None], spacing)[0]
            np.testing.assert_allclose(by_knee[(image_path, side)], expected, atol=1e-3)


def test_evaluate_pipeline_on_radiographs(tiny_models, dataset, tmp_path):
    wf = run(["train", "evaluate"], "evaluating_pipeline", bundle_root=str(tmp_path),
             dataset_dir=str(dataset / "lists"), model_dir=str(tiny_models / "landmarks"),
             roi_model_dir=str(tiny_models / "roi"), eval_fold="all", eval_max_items=1, min_confidence=0.0,
             device="$torch.device('cpu')")
    summary = wf.parser.get_parsed_content("pipeline_evaluation")
    out = tmp_path / "runs" / "landmarks_cpu_roi_scaled_fold0" / "eval" / "pipeline"  # the default stage
    assert summary["kind"] == "pipeline" and summary["refine"] is True and summary["n_knees"] == 2
    rows = read_csv(out / "errors.csv")
    assert len(rows) == 2 and {r["side"] for r in rows} == {"R", "L"}
    assert summary["missed_knees"] == sum(r["found"] == "False" for r in rows)
    assert [r["setting"] for r in read_csv(out / "pck_test.csv")][0] == "all"
    assert (out / "ced_test.png").read_bytes()[:8] == PNG_MAGIC


def test_inference_writes_json_png_and_markups(tiny_models, dataset, tmp_path, markups_schema):
    import jsonschema

    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(dataset / "images" / "r0.dcm", inputs / "r0.dcm")
    (inputs / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"not a data set")
    (inputs / "notes.txt").write_text("not an image")
    wf = run(["inference"], "run", bundle_root=str(tmp_path), input_dir=str(inputs), output_dir=str(tmp_path / "out"),
             roi_model_dir=str(tiny_models / "roi"), landmark_model_dir=str(tiny_models / "landmarks"),
             min_confidence=0.0, device="cpu")
    summary = wf.parser.get_parsed_content("inference")
    out = tmp_path / "out"
    assert summary["n_ok"] == 1 and summary["n_failed"] == 1 and "broken.dcm" in summary["failed"][0]["error"]
    prediction = json.loads((out / "r0.json").read_text(encoding="utf-8"))
    assert prediction["format"] == "kneel-monai/prediction" and set(prediction["knees"]) == {"R", "L"}
    assert (out / "r0.png").read_bytes()[:8] == PNG_MAGIC
    markups = json.loads((out / "r0.mrk.json").read_text(encoding="utf-8"))
    jsonschema.validate(markups, markups_schema)
    present = [s for s, k in prediction["knees"].items() if k["present"]]
    assert len(markups["markups"]) == len(present)
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["n_ok"] == 1


def test_inference_takes_a_csv_list_with_spacings(tiny_models, dataset, tmp_path):
    """A JPEG export (grey stored as RGB, no spacing) listed with its spacing in a CSV, through the bundle."""
    from PIL import Image

    from kneel_monai.io import read_radiograph

    image = read_radiograph(dataset / "images" / "r0.dcm")
    grey = image[0].numpy()
    grey = np.round(255 * (grey - grey.min()) / (grey.max() - grey.min())).astype(np.uint8)
    Image.fromarray(np.repeat(grey[..., None], 3, axis=-1), "RGB").save(tmp_path / "export.jpg", quality=90)
    spacing = float(image.affine[0, 0])
    (tmp_path / "list.csv").write_text(f"file,spacing_mm\nexport.jpg,{spacing}\n")
    # the model zoo's name for the input, dataset_dir, is accepted as well as input_dir
    wf = run(["inference"], "run", bundle_root=str(tmp_path), dataset_dir=str(tmp_path / "list.csv"),
             output_dir=str(tmp_path / "out"), roi_model_dir=str(tiny_models / "roi"),
             landmark_model_dir=str(tiny_models / "landmarks"), min_confidence=0.0, device="cpu")
    summary = wf.parser.get_parsed_content("inference")
    assert summary["n_ok"] == 1 and not summary["failed"]
    prediction = json.loads((tmp_path / "out" / "export.json").read_text(encoding="utf-8"))
    assert prediction["pixel_spacing_mm"] == [spacing, spacing] and prediction["spacing_source"] == "user"


def test_ckpt_export_equals_eager(trained, tmp_path):
    root, _ = trained
    checkpoint = root / "runs" / "landmarks_cpu_fold0" / "best.pt"
    ts_path = tmp_path / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(ts_path), ckpt_file=str(checkpoint),
                meta_file=str(CONFIGS / "metadata.json"), config_file=str(CONFIGS / "train.json"),
                key_in_ckpt="network", use_trace=True, converter_kwargs={"check_trace": False},
                stage="landmarks_cpu", network_args=NET)
    scripted, meta, extra = load_net_with_metadata(str(ts_path), more_extra_files=("train.json",))
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 16
    assert "network_def" in json.loads(extra["train.json"])
    eager = build_network(out_points=16, **NET)
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    eager.load_state_dict(payload.get("network", payload))  # best.pt holds the bare state dict
    eager.eval()
    x = torch.rand(2, 1, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = eager(x), scripted(x)
    assert got.shape == (2, 16, 2)
    assert (got - expected).abs().max().item() < 1e-5


def test_torchrun_two_processes_gloo(dataset, tmp_path):
    configs = str([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "monai.bundle", "run", "training", "--config_file", configs, "--bundle_root", str(tmp_path),
               "--stage", "landmarks_cpu", "--dataset_dir", str(dataset / "lists"), "--max_epochs", "1",
               "--batch_size", "2", "--cache", "False", "--network_args", str(NET)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, check=False, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "runs" / "landmarks_cpu_fold0"
    last = latest_checkpoint(out)
    assert last.endswith("=1.pt") and (out / "best.pt").is_file()
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state["network"])  # saved unwrapped, loadable anywhere
    assert state["trainer"]["iteration"] == 1  # 4 training knees, 2 per process, batch 2
    assert load_model(tmp_path / "runs" / "model_landmarks_cpu").task == "landmarks"
    assert done.stdout.count("exported") == 1  # only rank 0 exports


def test_fold_training_argv_sets_the_fold_and_its_folders(tmp_path):
    argv = ["run", "cross_validation", "--config_file", "configs/train.json", "--fold", "3", "--output_dir=x",
            "--stage", "roi_cpu", "--export_dir", "y", "--max_epochs", "2"]
    args = fold_training_argv(argv, 1, tmp_path / "fold1")
    assert args == ["run", "training", "--config_file", "configs/train.json", "--stage", "roi_cpu", "--max_epochs",
                    "2", "--fold", "1", "--output_dir", str(tmp_path / "fold1"), "--export_dir",
                    str(tmp_path / "fold1" / "model")]
    with pytest.raises(ValueError, match="cross_validation"):
        fold_training_argv(["run", "training"], 0, tmp_path)


def test_cross_validation_is_one_command(dataset, tmp_path):
    """`run cross_validation`: every fold of the datalist trained, out-of-fold tables, a fold ensemble."""
    command = [sys.executable, "-m", "monai.bundle", "run", "cross_validation", "--config_file",
               str(CONFIGS / "train.json"), "--bundle_root", str(tmp_path), "--dataset_dir", str(dataset / "lists"),
               "--stage", "landmarks_cpu", "--max_epochs", "1", "--epoch_length", "1", "--batch_size", "2",
               "--cache", "False", "--network_args", str(NET), "--progress", "False", "--tensorboard", "False"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, check=False, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cv = tmp_path / "runs" / "landmarks_cpu_cv"
    n_folds = read_datalist(dataset / "lists" / "landmark_datalist.json")["n_folds"]
    for k in range(n_folds):
        assert latest_checkpoint(cv / f"fold{k}").endswith("=1.pt")
        assert load_model(cv / f"fold{k}" / "model").task == "landmarks"
    ensemble = load_model(cv / "model_ensemble")
    assert len(ensemble.networks) == n_folds
    # every knee evaluated once, by the model of the fold that held it out
    metrics = json.loads((cv / "eval" / "metrics.json").read_text())
    n_knees = len(read_datalist(dataset / "lists" / "landmark_datalist.json")["items"])
    assert metrics["n_knees"] == n_knees
    rows = read_csv(cv / "folds.csv")
    assert [int(r["fold"]) for r in rows] == list(range(n_folds))
    assert sum(int(r["knees"]) for r in rows) == n_knees


def test_the_repository_and_the_bundle_carry_the_same_licence():
    assert (REPO_ROOT / "LICENSE").read_text() == (REPO_ROOT / "bundles" / "kneel_landmarks" / "LICENSE").read_text()
    assert "MIT License" in (REPO_ROOT / "LICENSE").read_text()
