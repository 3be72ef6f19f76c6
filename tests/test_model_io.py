"""The project's model format: save → load round trips, fp16 storage, ensembles, clear errors."""

import json
import shutil

import pytest
import torch

from kneel_monai.model_io import ModelFormatError, carry_fallback, load_model, save_model
from kneel_monai.networks import PRESETS, KneelHourglassNet

PRE = {"spacing_mm": 0.3, "pad_size": 520, "crop_size": 450,
       "intensity": {"kind": "percentile", "lower": 5, "upper": 99}}
ARGS = {**PRESETS["paper"], "width": 8, "depth": 3, "out_points": 16}


def _nets(n):
    nets = []
    for seed in range(n):
        torch.manual_seed(seed)
        nets.append(KneelHourglassNet(**ARGS).eval())
    return nets


def test_round_trip_ensemble(tmp_path):
    nets = _nets(2)
    save_model(tmp_path / "m", "landmarks", ARGS, [n.state_dict() for n in nets], PRE, {"data": "unit test"}, "paper")
    model = load_model(tmp_path / "m")
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        expected = (nets[0](x) + nets[1](x)) / 2
        torch.testing.assert_close(model.predict(x), expected)
    assert model.config["provenance"] == {"data": "unit test"}
    single = load_model(tmp_path / "m" / "model.json", folds=[1])
    with torch.no_grad():
        torch.testing.assert_close(single.predict(x), nets[1](x))


def test_fp16_storage_halves_size_and_stays_close(tmp_path):
    net = _nets(1)[0]
    save_model(tmp_path / "f32", "landmarks", ARGS, [net.state_dict()], PRE)
    save_model(tmp_path / "f16", "landmarks", ARGS, [net.state_dict()], PRE, dtype=torch.float16)
    s32 = (tmp_path / "f32" / "fold_0.safetensors").stat().st_size
    s16 = (tmp_path / "f16" / "fold_0.safetensors").stat().st_size
    assert s16 < 0.55 * s32
    x = torch.randn(1, 1, 128, 128)
    a, b = load_model(tmp_path / "f32").predict(x), load_model(tmp_path / "f16").predict(x)
    assert (a - b).abs().max() < 1e-3  # normalised units: < 0.1 px at 128 px
    assert next(load_model(tmp_path / "f16").networks[0].parameters()).dtype == torch.float32


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ModelFormatError, match="no model.json"):
        load_model(tmp_path)
    net = _nets(1)[0]
    folder = save_model(tmp_path / "m", "landmarks", ARGS, [net.state_dict()], PRE)
    config_path = folder / "model.json"
    config = json.loads(config_path.read_text())

    def broken(**changes):
        config_path.write_text(json.dumps({**config, **changes}))
        return pytest.raises(ModelFormatError, match=str(config_path).replace(".", r"\."))

    with broken(format="something-else"):
        load_model(folder)
    with broken(format_version=99):
        load_model(folder)
    with broken(task="segmentation"):
        load_model(folder)
    with broken(network={"args": {**ARGS, "block": "dense"}}):
        load_model(folder)
    with broken(preprocessing={**PRE, "intensity": {"kind": "zscore"}}):
        load_model(folder)
    with broken(weights=[]):
        load_model(folder)
    config_path.write_text("{not json")
    with pytest.raises(ModelFormatError, match="invalid JSON"):
        load_model(folder)
    config_path.write_text(json.dumps({**config, "weights": ["fold_7.safetensors"]}))
    with pytest.raises(ModelFormatError, match="fold_7.safetensors.*missing"):
        load_model(folder)
    config_path.write_text(json.dumps(config))
    weights = folder / config["weights"][0]
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated download
    with pytest.raises(ModelFormatError, match=r"fold_0\.safetensors: not a readable safetensors file"):
        load_model(folder)


def test_wrong_weights_for_the_network(tmp_path):
    other = KneelHourglassNet(**{**ARGS, "width": 12})
    with pytest.raises(ValueError, match="task must be one of"):
        save_model(tmp_path / "x", "classify", ARGS, [other.state_dict()], PRE)
    folder = save_model(tmp_path / "m", "landmarks", {**ARGS, "width": 12}, [other.state_dict()], PRE)
    config = json.loads((folder / "model.json").read_text())
    config["network"]["args"] = ARGS  # claims width 8, holds width 12
    (folder / "model.json").write_text(json.dumps(config))
    with pytest.raises(ModelFormatError, match=r"shape mismatches: .*file \(12"):
        load_model(folder)


def test_an_roi_model_loads_its_fallback_and_says_what_is_wrong_with_one(tmp_path):
    """An ROI model's ``fallback`` (a second ROI model, relative to it) is loaded with it; a missing one, one of
    another task, one with a fallback of its own, or one on a landmark model is refused naming the file."""
    roi_args = {**ARGS, "out_points": 1}
    first, second = (KneelHourglassNet(**roi_args).eval() for _ in range(2))
    save_model(tmp_path / "synthetic", "roi", roi_args, [second.state_dict()], PRE)
    folder = save_model(tmp_path / "real", "roi", roi_args, [first.state_dict()], PRE, fallback="../synthetic")
    model = load_model(folder)
    assert model.fallback is not None and model.fallback.fallback is None
    assert model.fallback.path.resolve() == (tmp_path / "synthetic").resolve()
    x = torch.randn(1, 1, 64, 64)
    torch.testing.assert_close(model.fallback.predict(x), second(x))
    assert load_model(tmp_path / "synthetic").fallback is None

    config_path = folder / "model.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "fallback": "../nowhere"}))
    with pytest.raises(ModelFormatError, match=r"real.*model.json.*fallback '\.\./nowhere'.*no model.json"):
        load_model(folder)
    save_model(tmp_path / "lm", "landmarks", ARGS, [_nets(1)[0].state_dict()], PRE)
    config_path.write_text(json.dumps({**config, "fallback": "../lm"}))
    with pytest.raises(ModelFormatError, match="is a landmarks model, not an ROI model"):
        load_model(folder)
    config_path.write_text(json.dumps(config))
    save_model(tmp_path / "synthetic", "roi", roi_args, [second.state_dict()], PRE, fallback="../real")  # a loop
    with pytest.raises(ModelFormatError, match="names a fallback of its own; one fallback at most"):
        load_model(folder)
    with pytest.raises(ValueError, match="only an ROI model may name a fallback"):
        save_model(tmp_path / "bad", "landmarks", ARGS, [_nets(1)[0].state_dict()], PRE, fallback="../synthetic")
    lm_path = tmp_path / "lm" / "model.json"
    lm_path.write_text(json.dumps({**json.loads(lm_path.read_text()), "fallback": "../synthetic"}))
    with pytest.raises(ModelFormatError, match="only ROI models have one"):
        load_model(tmp_path / "lm")


def test_a_model_fine_tuned_from_an_roi_model_keeps_its_fallback(tmp_path):
    """``carry_fallback``: the fallback is copied beside the exported model and named in its model.json, so the
    exported folder works wherever its parent goes; a source without a fallback leaves the export alone."""
    roi_args = {**ARGS, "out_points": 1}
    net = KneelHourglassNet(**roi_args).eval()
    save_model(tmp_path / "bundle" / "synthetic", "roi", roi_args, [net.state_dict()], PRE)
    source = save_model(tmp_path / "bundle" / "roi", "roi", roi_args, [net.state_dict()], PRE, fallback="../synthetic")
    exported = save_model(tmp_path / "state" / "v1" / "roi", "roi", roi_args, [net.state_dict()], PRE)
    copy = carry_fallback(source, exported)
    assert copy == tmp_path / "state" / "v1" / "synthetic" and (copy / "fold_0.safetensors").is_file()
    shutil.rmtree(tmp_path / "bundle")  # the export no longer needs the source's folder
    assert load_model(exported).fallback.path.resolve() == copy.resolve()
    plain = save_model(tmp_path / "plain", "roi", roi_args, [net.state_dict()], PRE)
    assert carry_fallback(plain, exported) is None
