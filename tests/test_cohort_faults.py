"""Faults after reading: a predictor or a writer failing on one radiograph, a write failing half-way, and the
resume rules (the JSON is written last and marks a radiograph done)."""

import json
import shutil

import pytest
from conftest import REPO_ROOT

from kneel_monai.atomic import TEMP_PREFIX, atomic_write, atomic_write_text
from kneel_monai.cohort import predict_paths
from kneel_monai.inference import KneelPredictor, default_model_dirs

SAMPLE = REPO_ROOT / "samples" / "synthetic_bilateral_knee.dcm"


class FailsOn(KneelPredictor):
    """The shipped predictor, except that it raises for one radiograph (after it was read)."""

    def __init__(self, name: str) -> None:
        super().__init__(*default_model_dirs(), device="cpu")
        self.name = name

    def predict_image(self, image, label=""):
        if label.endswith(self.name):
            raise RuntimeError("the network ran out of memory")
        return super().predict_image(image, label)


@pytest.fixture(scope="module")
def predictor():
    return FailsOn("b.dcm")


@pytest.fixture()
def cohort(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(SAMPLE, folder / f"{name}.dcm")
    return folder


def test_a_write_failing_half_way_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    atomic_write_text(path, "old, complete")

    def half(tmp):
        tmp.write_text("new but cut")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half)
    assert path.read_text() == "old, complete"
    assert not list(tmp_path.glob(f"{TEMP_PREFIX}*"))
    with pytest.raises(OSError):
        atomic_write(tmp_path / "new.json", half)
    assert not (tmp_path / "new.json").exists() and not list(tmp_path.glob(f"{TEMP_PREFIX}*"))


def test_a_predictor_failure_on_one_radiograph_fails_only_it(predictor, cohort, tmp_path):
    out = tmp_path / "out"
    summary = predict_paths(predictor, cohort, out, formats=["json"], progress=False)
    assert summary["n_ok"] == 2 and summary["n_failed"] == 1
    assert "b.dcm" in summary["failed"][0]["error"] and "out of memory" in summary["failed"][0]["error"]
    assert (out / "a.json").is_file() and (out / "c.json").is_file() and not (out / "b.json").exists()
    written = json.loads((out / "summary.json").read_text())
    assert [f["input"] for f in written["failed"]] == [str(cohort / "b.dcm")]


def test_a_writer_failure_fails_only_that_radiograph_and_the_json_comes_last(cohort, tmp_path):
    predictor = KneelPredictor(*default_model_dirs(), device="cpu")
    out = tmp_path / "out"
    (out / "a.png").mkdir(parents=True)  # the overlay of a cannot be written there
    summary = predict_paths(predictor, cohort, out, formats=["json", "png"], progress=False)
    assert summary["n_ok"] == 2 and summary["n_failed"] == 1 and "a.dcm" in summary["failed"][0]["error"]
    assert not (out / "a.json").exists()  # not marked done: the next run predicts it again
    assert (out / "b.json").is_file() and (out / "b.png").is_file()
    (out / "a.png").rmdir()
    again = predict_paths(predictor, cohort, out, formats=["json", "png"], progress=False)
    assert (again["n_ok"], again["n_skipped"], again["n_failed"]) == (1, 2, 0)


def test_the_resume_rules(cohort, tmp_path):
    predictor = KneelPredictor(*default_model_dirs(), device="cpu")
    out = tmp_path / "out"
    run = lambda: predict_paths(predictor, cohort, out, formats=["json", "mrk"], progress=False)  # noqa: E731
    assert run()["n_ok"] == 3
    assert (run()["n_ok"], run()["n_skipped"]) == (0, 3)  # all done: nothing predicted again
    (out / "a.mrk.json").unlink()  # an output missing
    (out / "b.json").write_text('{"format": "kneel-monai/prediction", "knees": ')  # cut short
    moved = json.loads((out / "c.json").read_text())
    moved["source"] = str(tmp_path / "elsewhere" / "c.dcm")  # as if another radiograph of that name wrote it
    (out / "c.json").write_text(json.dumps(moved))
    summary = run()
    assert (summary["n_ok"], summary["n_skipped"]) == (3, 0)
    assert (out / "a.mrk.json").is_file() and json.loads((out / "b.json").read_text())["knees"]
    # c.json belongs to the other radiograph now: it is left alone, ours is written under a tagged name
    assert json.loads((out / "c.json").read_text())["source"] == moved["source"]
    tagged = [json.loads(p.read_text()) for p in out.glob("c_*.json") if not p.name.endswith(".mrk.json")]
    assert [t["source"] for t in tagged] == [str((cohort / "c.dcm").resolve())]
