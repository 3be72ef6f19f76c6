"""Release converter: reproduces the original network's outputs; refuses unsafe or broken input."""

import argparse
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from kneel_monai.cli import main as kneel
from kneel_monai.model_io import ModelFormatError, load_model
from kneel_monai.networks import KneelHourglassNet
from kneel_monai.release import (
    UnsafePickleError,
    convert_release,
    load_session_args,
    map_release_state_dict,
    read_release_snapshot,
    release_network_args,
)


@pytest.fixture(scope="module")
def converted(release_fixture_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    return {p.name: p for p in convert_release(release_fixture_dir, out)}


@pytest.mark.parametrize("name,task,points", [("lc", "roi", 1), ("hc", "landmarks", 16)])
def test_converted_model_reproduces_release_outputs(release_fixture_dir, converted, name, task, points):
    model = load_model(converted[name])
    assert model.task == task and len(model.networks) == 1
    assert model.networks[0].out_points == points
    with np.load(release_fixture_dir / name / "expected.npz") as data:
        got = model.predict(torch.from_numpy(data["input"])).numpy()
        np.testing.assert_allclose(got, data["output"], atol=1e-5, rtol=0)
    pre = model.preprocessing
    assert pre["spacing_mm"] == (1.0 if name == "lc" else 0.3)
    assert (pre["pad_size"], pre["crop_size"]) == (520, 450)
    mean_std = np.load(release_fixture_dir / "mean_std.npy")
    assert pre["intensity"] == {"kind": "release_mean_std", "mean": mean_std[0].tolist(), "std": mean_std[1].tolist()}


def test_converted_files_need_no_pickle(converted):
    files = sorted(os.listdir(converted["hc"]))
    assert files == ["fold_0.safetensors", "model.json"]
    config = json.loads((converted["hc"] / "model.json").read_text())
    assert config["network"]["args"]["coordinate_convention"] == "release"


def test_session_args_read_safely(release_fixture_dir):
    args = load_session_args(release_fixture_dir / "hc" / "session.pkl")
    assert isinstance(args, argparse.Namespace)
    assert (args.annotations, args.base_width, args.multiscale_hg, args.hc_spacing) == ("hc", 8, True, 0.3)


class _RunsCode:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _snapshot_copy(release_fixture_dir, tmp_path, name="hc"):
    folder = tmp_path / "release" / name
    shutil.copytree(release_fixture_dir / name, folder)
    shutil.copy(release_fixture_dir / "mean_std.npy", tmp_path / "release" / "mean_std.npy")
    (folder / "expected.npz").unlink()
    return folder


def test_malicious_session_pickle_is_refused(release_fixture_dir, tmp_path):
    folder = _snapshot_copy(release_fixture_dir, tmp_path)
    marker = tmp_path / "pwned"
    with open(folder / "session.pkl", "wb") as fh:
        pickle.dump({"args": [_RunsCode(marker)]}, fh)
    with pytest.raises(UnsafePickleError, match=r"session\.pkl.*refusing to load posix\.system"):
        convert_release(folder, tmp_path / "out")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()
    # the CLI says the same in one line, exit code 2
    assert kneel(["convert-release", str(folder), str(tmp_path / "out")]) == 2
    assert not marker.exists()


def test_malicious_weights_pickle_is_refused(release_fixture_dir, tmp_path):
    folder = _snapshot_copy(release_fixture_dir, tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"model": _RunsCode(marker)}, folder / "fold_0_2019_07_14_snapshot.pth")
    with pytest.raises(UnsafePickleError, match="fold_0_2019_07_14_snapshot.pth"):
        convert_release(folder, tmp_path / "out")
    assert not marker.exists()


def test_folder_without_folds(release_fixture_dir, tmp_path):
    folder = _snapshot_copy(release_fixture_dir, tmp_path)
    (folder / "fold_0_2019_07_14_snapshot.pth").unlink()
    with pytest.raises(ModelFormatError, match="no fold_<k>_\\*.pth"):
        read_release_snapshot(folder)
    with pytest.raises(ModelFormatError, match="no release snapshot folders"):
        convert_release(tmp_path / "nothing_here", tmp_path / "out")


def test_missing_mean_std(release_fixture_dir, tmp_path):
    folder = _snapshot_copy(release_fixture_dir, tmp_path)
    (tmp_path / "release" / "mean_std.npy").unlink()
    with pytest.raises(ModelFormatError, match="mean_std.npy"):
        read_release_snapshot(folder)


def test_mismatched_state_dict_names_keys(release_fixture_dir, tmp_path):
    folder = _snapshot_copy(release_fixture_dir, tmp_path)
    path = folder / "fold_0_2019_07_14_snapshot.pth"
    payload = torch.load(path, weights_only=True)
    payload["model"].pop("hourglass.upper2.scale2.0.weight")
    payload["model"]["hourglass.extra.weight"] = torch.zeros(3)
    torch.save(payload, path)
    with pytest.raises(ModelFormatError) as err:
        convert_release(folder, tmp_path / "out")
    message = str(err.value)
    assert "missing keys: hourglass.upper.1.scale2.conv.weight" in message
    assert "unexpected keys: hourglass.extra.weight" in message
    assert str(path) in message


def test_session_contradicting_weights(release_fixture_dir, tmp_path):
    folder = _snapshot_copy(release_fixture_dir, tmp_path)
    args = load_session_args(folder / "session.pkl")
    args.base_width = 32
    with open(folder / "session.pkl", "wb") as fh:
        pickle.dump({"args": [args]}, fh)
    with pytest.raises(ModelFormatError, match="base_width=32 but the weights have width 8"):
        convert_release(folder, tmp_path / "out")


def test_bottleneck_inner_levels_convert(tmp_path):
    """A snapshot laid out as docs/method.md §3 describes the release (HMP outer level, bottleneck below) maps too."""
    torch.manual_seed(3)
    ours = KneelHourglassNet(in_channels=3, out_points=16, width=8, depth=3, block="hmp", inner_block="bottleneck",
                             upsample_mode="bilinear", pointwise_kernel_size=3, bias=True,
                             coordinate_convention="release").eval()
    # build the release-named state dict by renaming our keys token by token (the inverse mapping)
    tokens = {"inner": "lower4", "lower_out": "lower5", "reduce": "bottleneck", "expand": "out"}
    branches = {"lower": "lower", "upper": "upper"}
    release_like = {}
    for key, value in ours.state_dict().items():
        k = key.replace("entry.stem.conv.", "layer1.0.").replace("entry.stem.norm.", "layer1.1.")
        k = k.replace("entry.res1.", "layer1.3.").replace("entry.res2.", "layer2.0.")
        k = k.replace("entry.res3.", "layer2.1.").replace("entry.res4.", "layer2.2.")
        k = k.replace("head.mix1.", "mixer.1.").replace("head.mix2.", "mixer.3.").replace("out_conv.", "out_block.0.")
        parts, out = k.split("."), []
        i = 0
        while i < len(parts):
            part = parts[i]
            if part in branches and i + 1 < len(parts) and parts[i + 1].isdigit():
                out.append(f"{part}{int(parts[i + 1]) + 1}")
                i += 2
                continue
            if part == "conv" and i + 1 < len(parts) and parts[i + 1] in ("weight", "bias"):
                part = "0"
            elif part == "norm":
                part = "1"
            out.append(tokens.get(part, part))
            i += 1
        release_like[".".join(out)] = value
    assert "hourglass.lower4.lower1.bottleneck.0.weight" in release_like
    args = release_network_args(release_like)
    assert (args["block"], args["inner_block"], args["depth"], args["width"]) == ("hmp", "bottleneck", 3, 8)
    mapped = map_release_state_dict(release_like)
    assert mapped.keys() == ours.state_dict().keys()


def test_cli_convert_and_verify(release_fixture_dir, tmp_path, capsys):
    assert kneel(["convert-release", str(release_fixture_dir), str(tmp_path / "m"), "--verify"]) == 0
    out = capsys.readouterr().out
    assert out.count("verify against") == 2
    assert (tmp_path / "m" / "hc" / "model.json").is_file()
    assert kneel(["convert-release", str(tmp_path / "absent"), str(tmp_path / "n")]) == 2
    assert "no release snapshot folders" in capsys.readouterr().err
