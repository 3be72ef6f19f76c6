"""Training: a real MONAI trainer on synthetic radiographs, checkpoints that resume, transfer, export."""

import numpy as np
import pytest
import torch

from kneel_monai.data import build_datalists
from kneel_monai.losses import WingLoss
from kneel_monai.model_io import load_model
from kneel_monai.networks import KneelHourglassNet
from kneel_monai.synthetic.generate import generate_radiograph, write_radiograph
from kneel_monai.training import (
    STAGES,
    build_evaluator,
    build_trainer,
    export_stage_model,
    latest_checkpoint,
    stage_datasets,
    stage_loaders,
    transfer_weights,
)

NET = dict(in_channels=1, width=8, depth=2)


@pytest.fixture(scope="module")
def datalists(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    for seed in range(6):
        sample = generate_radiograph(seed, spacing_mm=0.5, size=(700, 880))
        write_radiograph(sample, root, f"r{seed}", fmt="dcm")
    lists = build_datalists(root, n_folds=3, progress=False)
    assert not lists.bad_files
    return lists.write(root / "lists")


def make_trainer(stage, lists, out, max_epochs, points):
    train_ds, val_ds = stage_datasets(lists, stage, fold=0, cache=False)
    train_loader, val_loader = stage_loaders(train_ds, val_ds, batch_size=2)
    torch.manual_seed(0)
    net = KneelHourglassNet(out_points=points, **NET)
    geometry = STAGES[stage]
    evaluator = build_evaluator(net, val_loader, "cpu", out, spacing_mm=geometry.spacing_mm,
                                image_size=(geometry.crop_size, geometry.crop_size),
                                subset="model_selection" if points == 16 else None)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    trainer = build_trainer(net, train_loader, evaluator, "cpu", out, max_epochs, WingLoss(), optimizer,
                            mixup_alpha=0.75, epoch_length=2)
    return trainer, net


def test_train_resume_transfer_export(datalists, tmp_path):
    roi_list, lm_list = datalists
    out = tmp_path / "landmarks"
    trainer, net = make_trainer("landmarks_cpu", lm_list, out, max_epochs=2, points=16)
    trainer.run()
    assert trainer.state.epoch == 2 and trainer.state.iteration == 4
    last = latest_checkpoint(out)
    assert last is not None and last.endswith("=2.pt")
    assert (out / "best.pt").is_file()
    assert np.isfinite(trainer.state.output["loss"].item())

    # resume: a new trainer in the same folder continues at epoch 2 and runs one more
    trainer2, net2 = make_trainer("landmarks_cpu", lm_list, out, max_epochs=3, points=16)
    trainer2.run()
    assert trainer2.state.epoch == 3 and trainer2.state.iteration == 6
    assert latest_checkpoint(out).endswith("=3.pt")

    # transfer: the ROI model's weights initialise the landmark model, all layers but the last
    roi_out = tmp_path / "roi"
    roi_trainer, roi_net = make_trainer("roi_cpu", roi_list, roi_out, max_epochs=1, points=1)
    roi_trainer.run()
    fresh = KneelHourglassNet(out_points=16, **NET)
    copied = transfer_weights(fresh, latest_checkpoint(roi_out))
    assert copied and not any(k.startswith("out_conv.") for k in copied)
    for key in copied:
        torch.testing.assert_close(fresh.state_dict()[key], roi_net.state_dict()[key])
    assert len(copied) == len(fresh.state_dict()) - 2  # everything but out_conv.weight/bias

    # export in the project's format, fp16, and load it back through the one loader
    model_dir = export_stage_model(latest_checkpoint(out), dict(NET), "landmarks_cpu", tmp_path / "model",
                                   provenance={"data": "synthetic (test)"})
    model = load_model(model_dir)
    assert model.task == "landmarks" and model.preprocessing["spacing_mm"] == 0.6
    x = torch.rand(1, 1, 224, 224)
    net2.eval()
    with torch.no_grad():
        assert (model.predict(x) - net2(x)).abs().max() < 2e-3


def test_one_stage_comparison_tolerates_float_noise_and_names_real_differences():
    from kneel_monai.training.stages import STAGES, StageConfig

    shipped = STAGES["landmarks_cpu_roi_scaled"]
    noisy = StageConfig.from_preprocessing("landmarks", {**shipped.preprocessing, "spacing_mm": 0.6 + 1e-12})
    assert noisy.differences(shipped) == []  # a spacing read back from JSON is the same stage
    other = StageConfig.from_preprocessing("landmarks", {**shipped.preprocessing, "spacing_mm": 0.3,
                                                         "intensity": {"kind": "percentile", "lower": 1, "upper": 99}})
    said = " ".join(other.differences(shipped))
    assert "spacing_mm 0.3 vs 0.6" in said and "intensity percentiles" in said


def test_the_predictor_normalises_as_the_model_files_say(tmp_path):
    import json
    import shutil

    from kneel_monai.inference import KneelPredictor, default_model_dirs

    shipped_roi, shipped_landmarks = default_model_dirs()
    roi, landmarks, fallback = (shutil.copytree(d, tmp_path / d.name)
                                for d in (shipped_roi, shipped_landmarks, shipped_roi.parent / "roi_synthetic"))
    for folder in (roi, fallback, landmarks):  # the landmark model last: its config is changed again below
        config = json.loads((folder / "model.json").read_text())
        config["preprocessing"]["intensity"] = {"kind": "percentile", "lower": 1, "upper": 99.5}
        (folder / "model.json").write_text(json.dumps(config))
    predictor = KneelPredictor(roi, landmarks, device="cpu")
    assert predictor.intensity_percentiles == (1.0, 99.5)
    # the ROI model's fallback reads the same normalised radiograph: its file must say the same
    fallback_config = json.loads((fallback / "model.json").read_text())
    fallback_config["preprocessing"]["intensity"]["upper"] = 99
    (fallback / "model.json").write_text(json.dumps(fallback_config))
    with pytest.raises(ValueError, match="roi_synthetic scales intensities to percentiles"):
        KneelPredictor(roi, landmarks, device="cpu")
    fallback_config["preprocessing"]["intensity"]["upper"] = 99.5
    (fallback / "model.json").write_text(json.dumps(fallback_config))
    config["preprocessing"]["intensity"]["lower"] = 2  # the landmark model alone differs now
    (landmarks / "model.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="normalised once for both stages"):
        KneelPredictor(roi, landmarks, device="cpu")
