"""The bundle as the MONAI model zoo's own tools check it (``ci/verify_bundle.py`` of the model-zoo
repository, minimal mode, and its optional checks), offline: ``verify_metadata`` against the vendored
schema, ``verify_net_in_out`` on the configs' ``network_def``, the zoo's weight files, ``monai.bundle.load``,
the zoo's default run id, and settings that cannot work refused before any data is made."""

import json
import shutil

import pytest
import torch
from conftest import REPO_ROOT, messages
from monai.bundle import ConfigWorkflow, load, verify_metadata, verify_net_in_out

from kneel_monai.inference import default_model_dirs
from kneel_monai.model_io import load_model
from kneel_monai.networks import build_network
from kneel_monai.training import STAGES, check_network_fits, default_network_args
from kneel_monai.zoo import ZOO_WEIGHTS, stale_zoo_weights, zoo_network

BUNDLE = REPO_ROOT / "bundles" / "kneel_landmarks"
CONFIGS = BUNDLE / "configs"
META = CONFIGS / "metadata.json"
SCHEMA = REPO_ROOT / "tests" / "data" / "monai" / "meta_schema_20240725.json"


def test_the_zoo_minimal_mode_checks():
    """verify_bundle.py -m min: necessary and preferred files, version in the changelog, metadata format."""
    for necessary in ("configs/metadata.json", "LICENSE", "models/model.pt", "configs/inference.json"):
        assert (BUNDLE / necessary).is_file(), necessary
    meta = json.loads(META.read_text(encoding="utf-8"))
    assert meta["version"] in meta["changelog"]
    verify_metadata(meta_file=str(META), filepath=str(SCHEMA))  # raises on a schema violation
    meta_schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert meta["schema"].endswith(SCHEMA.name) and "required" in meta_schema


def test_verify_metadata_catches_a_broken_file(tmp_path):
    """The check is real: a metadata file without its network format fails it."""
    meta = json.loads(META.read_text(encoding="utf-8"))
    del meta["network_data_format"]
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(Exception, match="network_data_format"):
        verify_metadata(meta_file=str(bad), filepath=str(SCHEMA))


@pytest.mark.parametrize("config", ["inference", "train"])
def test_verify_net_in_out_on_network_def(config):
    """The zoo's shape check of the network the config builds, against metadata.json's network_data_format."""
    verify_net_in_out(net_id="network_def", meta_file=str(META), config_file=str(CONFIGS / f"{config}.json"),
                      device="cpu", bundle_root=str(BUNDLE))


def test_the_roi_network_matches_its_own_data_format():
    """verify_net_in_out reads only network_data_format; the ROI network has roi_network_data_format (the
    schema's <name>_data_format): the same check, done here."""
    meta = json.loads(META.read_text(encoding="utf-8"))["roi_network_data_format"]
    net = zoo_network(default_model_dirs()[0]).eval()
    image = meta["inputs"]["image"]
    with torch.no_grad():
        out = net(torch.rand(1, image["num_channels"], *image["spatial_shape"]))
    assert out.shape[1] == meta["outputs"]["pred"]["num_channels"] == 1 and out.dtype == torch.float32


def test_zoo_weight_files_are_the_project_models_weights(tmp_path):
    assert stale_zoo_weights(BUNDLE) == []
    copy = tmp_path / "bundle"
    shutil.copytree(BUNDLE / "models", copy / "models")
    state = torch.load(copy / "models" / "model.pt", weights_only=True)
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first] + 1
    torch.save(state, copy / "models" / "model.pt")
    (copy / "models" / ZOO_WEIGHTS["roi"]).unlink()
    problems = " ".join(stale_zoo_weights(copy))
    assert "model.pt: not the weights of" in problems and "model_roi.pt: missing" in problems


def test_monai_bundle_load_gives_the_shipped_landmark_network():
    """``monai.bundle.load`` builds train.json's network_def (its default stage is the shipped model's) and fills it
    from models/model.pt: every tensor, the same outputs as the project's loader."""
    net = load(name=BUNDLE.name, bundle_dir=str(BUNDLE.parent), model_file="models/model.pt", device="cpu",
               workflow_type="train").eval()
    shipped = load_model(default_model_dirs()[1]).networks[0]
    assert net.state_dict().keys() == shipped.state_dict().keys()
    x = torch.rand(2, 1, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(net(x), shipped(x), atol=1e-5, rtol=0)
    # weights of another network (the ROI model's: the same layers but one point) fail loudly, not a silent
    # partial copy with a random output layer
    with pytest.raises(ValueError, match=r"do not fit this network .* 2 of \d+ tensors were not in them .*out_conv"):
        load(name=BUNDLE.name, bundle_dir=str(BUNDLE.parent), model_file="models/model_roi.pt", device="cpu",
             workflow_type="train")


@pytest.mark.parametrize("stage_name", sorted(STAGES))
def test_every_stage_starts_with_a_network_its_input_can_carry(stage_name):
    stage = STAGES[stage_name]
    net = build_network(out_points=stage.out_points, **default_network_args(stage)).eval()
    check_network_fits(net, stage, stage_name)
    with torch.no_grad():
        assert net(torch.rand(1, 1, stage.crop_size, stage.crop_size)).shape == (1, stage.out_points, 2)


def test_a_network_too_deep_or_with_other_points_is_refused_naming_the_setting():
    stage = STAGES["landmarks_cpu"]
    with pytest.raises(ValueError, match=r"network_args: an hourglass of depth 6 needs inputs of at least 256 px, "
                                         r"stage 'landmarks_cpu' crops 224 px; use depth <= 5"):
        check_network_fits(build_network(out_points=16, preset="paper", width=8, depth=6), stage, "landmarks_cpu")
    with pytest.raises(ValueError, match="predicts 1 points, stage 'landmarks_cpu' needs 16"):
        check_network_fits(build_network(out_points=1, preset="paper", width=8, depth=3), stage, "landmarks_cpu")


def test_the_zoo_run_id_trains_and_a_bad_network_stops_before_any_data(tmp_path):
    """``python -m monai.bundle run --config_file configs/train.json`` (run id ``run``) is the training; a network
    the stage's input cannot carry stops ``initialize`` before the synthetic data are generated."""
    common = dict(config_file=str(CONFIGS / "train.json"), meta_file=str(META), logging_file=False,
                  workflow_type=None, synthetic_count=2, max_epochs=1, epoch_length=1, batch_size=2, cache=False,
                  progress=False)
    bad = ConfigWorkflow(run_id="run", bundle_root=str(tmp_path / "bad"), stage="landmarks_cpu",
                         network_args={"preset": "paper", "width": 8, "depth": 6}, **common)
    with pytest.raises(Exception) as info:
        bad.initialize()
    assert "network_args: an hourglass of depth 6" in messages(info.value)
    assert not (tmp_path / "bad").exists()  # no data generated, nothing written
    missing = ConfigWorkflow(run_id="run", bundle_root=str(tmp_path / "missing"),
                             init_from=str(tmp_path / "no_such_best.pt"), **common)
    with pytest.raises(Exception) as info:
        missing.initialize()
    assert "init_from: " in messages(info.value) and "no_such_best.pt does not exist" in messages(info.value)
    assert not (tmp_path / "missing").exists()

    wf = ConfigWorkflow(run_id="run", bundle_root=str(tmp_path / "ok"),
                        network_args={"preset": "paper", "width": 8, "depth": 3}, **common)
    wf.initialize()
    wf.run()
    wf.finalize()
    exported = tmp_path / "ok" / "runs" / "model_landmarks_cpu_roi_scaled"
    assert load_model(exported).preprocessing == STAGES["landmarks_cpu_roi_scaled"].preprocessing


def test_the_inference_config_shows_its_pieces_and_an_override_swaps_one(tmp_path):
    """The detection settings and quality limits are config items (the code's defaults, tied here); overriding
    one changes what the bundle does: with a shape limit no knee can meet, the sample's knees are reported absent."""
    from kneel_monai.detection import ScanSettings
    from kneel_monai.quality import QualityThresholds

    sample = REPO_ROOT / "samples" / "synthetic_bilateral_knee.dcm"

    def infer(out, **override):
        wf = ConfigWorkflow(config_file=str(CONFIGS / "inference.json"), meta_file=str(META), logging_file=False,
                            workflow_type=None, bundle_root=str(BUNDLE), input_dir=str(sample), output_dir=str(out),
                            formats=["json"], device="cpu", **override)
        wf.initialize()
        assert wf.parser.get_parsed_content("quality") == QualityThresholds()
        scan = wf.parser.get_parsed_content("scan")
        wf.run()
        return scan, json.loads((out / "synthetic_bilateral_knee.json").read_text())["knees"]

    scan, knees = infer(tmp_path / "default")
    assert scan == ScanSettings() and all(k["present"] for k in knees.values())
    scan, knees = infer(tmp_path / "strict", **{"scan#knee_shape_limit": 0.01})
    assert scan.knee_shape_limit == 0.01 and not any(k["present"] for k in knees.values())
