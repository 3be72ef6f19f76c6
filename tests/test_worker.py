"""``kneel worker``'s request loop (``kneel_monai.worker.serve``) in process: one answer line per request line,
the same JSON ``kneel predict`` writes, and a bad request or radiograph answered without ending the loop.
The process itself (stdin/stdout, restart after a kill) is tested through the Slicer module's runner in
``tests/test_slicer_logic.py``."""

import io
import json

from conftest import REPO_ROOT

from kneel_monai.cli import main
from kneel_monai.inference import KneelPredictor, default_model_dirs
from kneel_monai.worker import serve

SAMPLE = REPO_ROOT / "samples" / "synthetic_bilateral_knee.dcm"


def test_requests_are_answered_in_order_and_a_bad_one_does_not_stop_the_loop(tmp_path):
    predictor = KneelPredictor(*default_model_dirs(), device="cpu")
    (tmp_path / "cut.dcm").write_bytes(SAMPLE.read_bytes()[:3000])  # a truncated DICOM
    requests = [json.dumps({"id": "a", "input": str(SAMPLE), "out": str(tmp_path / "a")}),
                "",
                "not json",
                json.dumps({"id": "b", "input": str(tmp_path / "cut.dcm"), "out": str(tmp_path / "b")}),
                json.dumps({"id": "c", "out": str(tmp_path / "c")}),
                json.dumps({"id": "d", "input": str(SAMPLE), "out": str(tmp_path / "d")})]
    answers = io.StringIO()
    assert serve(predictor, requests, answers) == 3
    said = [json.loads(line) for line in answers.getvalue().splitlines()]
    assert [a["id"] for a in said] == ["a", None, "b", "c", "d"]
    assert [a["ok"] for a in said] == [True, False, False, False, True]
    assert "cut.dcm" in said[2]["error"] and "'input'" in said[3]["error"]
    assert main(["predict", str(SAMPLE), "--out", str(tmp_path / "cli"), "--format", "json", "--device", "cpu",
                 "--workers", "0", "--no-progress"]) == 0
    cli = json.loads((tmp_path / "cli" / "synthetic_bilateral_knee.json").read_text())
    for answer in (said[0], said[4]):
        worker = json.loads(open(answer["json"], encoding="utf-8").read())
        for side in ("R", "L"):  # what kneel predict writes, for the same radiograph and models
            assert worker["knees"][side]["landmarks_px"] == cli["knees"][side]["landmarks_px"]
