"""The `kneel` command line over real files."""

import json

from test_data import write_case

from kneel_monai.cli import main as kneel


def test_build_datalists_and_info(tmp_path, capsys):
    data = tmp_path / "data"
    write_case(data, "a", "p1", {"R": (200, 300), "L": (600, 300)})
    write_case(data, "b", "p2", {"R": (200, 300)})
    (data / "c.json").write_text('{"format": "kneel-monai/ground-truth", "image": "nothing.dcm", "knees": {}}')
    assert kneel(["build-datalists", str(data), str(tmp_path / "lists"), "--folds", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 radiographs, 3 knees, 2 folds" in out and "skipped 1 file(s)" in out and "c.json" in out
    items = json.loads((tmp_path / "lists" / "landmark_datalist.json").read_text())["items"]
    assert len(items) == 3

    (tmp_path / "empty.dcm").write_bytes(b"")
    assert kneel(["info", str(data / "a.dcm"), str(tmp_path / "empty.dcm")]) == 1
    out = capsys.readouterr().out
    assert "ImagerPixelSpacing" in out and "(0.5, 0.5)" in out and "(600, 800)" in out
    assert "empty.dcm: error:" in out

    assert kneel(["build-datalists", str(tmp_path / "absent"), str(tmp_path / "x")]) == 2
    assert "not a folder" in capsys.readouterr().err
