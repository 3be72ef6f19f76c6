"""A built wheel carries what the defaults need: installed into a fresh environment (no checkout beside
it), `kneel predict` finds the shipped models and the MONAI Label app, and the annotation CSV is there.

The wheel is built from this checkout without network (``--no-build-isolation``); the environment
sees the already installed dependencies (``--system-site-packages``) but its own kneel_monai.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("install")
    wheels = root / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w",
                            str(wheels), str(REPO)], capture_output=True, text=True, timeout=600)
    if build.returncode != 0 and "No module named" in build.stderr:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip().splitlines()[-1]}")
    assert build.returncode == 0, build.stderr
    env_dir = root / "env"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    wheel = next(wheels.glob("kneel_monai-*.whl"))
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return env_dir, root


def test_an_installed_wheel_predicts_with_its_own_models(installed):
    env_dir, root = installed
    work = root / "elsewhere"  # not the checkout: nothing may be found through it
    work.mkdir()
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c",
                            "import json, kneel_monai, kneel_monai.inference as i, kneel_monai.data.oai as o; "
                            "print(json.dumps([kneel_monai.__file__, [str(p) for p in i.default_model_dirs()], "
                            "str(o.default_annotation_csv())]))"], capture_output=True, text=True, cwd=work)
    assert where.returncode == 0, where.stderr
    package, models, csv_path = json.loads(where.stdout)
    assert str(env_dir) in package and all(str(env_dir) in m for m in models) and str(env_dir) in csv_path
    assert Path(csv_path).stat().st_size > 100_000
    assert (Path(package).parent / "monailabel_app" / "main.py").is_file()
    out = work / "predictions"
    run = subprocess.run([str(env_dir / "bin" / "kneel"), "predict",
                          str(REPO / "samples" / "synthetic_bilateral_knee.dcm"),
                          "--out", str(out), "--no-progress"], capture_output=True, text=True, cwd=work, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert str(env_dir) in run.stdout  # the models line names the installed bundle
    prediction = json.loads((out / "synthetic_bilateral_knee.json").read_text())
    assert all(k["present"] for k in prediction["knees"].values())
    assert (out / "synthetic_bilateral_knee.mrk.json").is_file() and (out / "synthetic_bilateral_knee.png").is_file()
