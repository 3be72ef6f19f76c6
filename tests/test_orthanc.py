"""The test PACS: a real Orthanc with DICOMweb on 127.0.0.1 holds synthetic radiographs, and they come back intact.

This checks the fixture the MONAI Label tests use for `--studies <DICOMweb URL>`: QIDO-RS finds the
studies, WADO-RS returns the instance, and kneel_monai reads the retrieved file to the same pixels and
spacing as the original.
"""

import json
import urllib.request

import numpy as np
import pytest
from orthanc_server import require_orthanc, start_orthanc, upload

from kneel_monai.io import read_radiograph
from kneel_monai.synthetic.generate import generate_radiograph, write_radiograph


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    require_orthanc()
    root = tmp_path_factory.mktemp("orthanc")
    files = []
    for i, knees in enumerate((("R", "L"), ("R",))):
        sample = generate_radiograph(9_400_001 + i, knees=knees, spacing_mm=0.3, size=(1000, 1200))
        image, _ = write_radiograph(sample, root / "dicom", f"knee{i}", spacing_tag="ImagerPixelSpacing")
        files.append(image)
    with start_orthanc(root / "server") as server:
        answers = upload(server["url"], files)
        yield server, files, answers


def get_json(url, accept="application/dicom+json"):
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_upload_and_qido(pacs):
    server, files, answers = pacs
    assert [a["Status"] for a in answers] == ["Success", "Success"]
    studies = get_json(f"{server['dicomweb']}/studies")
    assert len(studies) == 2
    # PatientID (0010,0020) of the synthetic radiographs names them as synthetic
    assert all("SYNTHETIC" in s["00100020"]["Value"][0] for s in studies)


def test_wado_returns_the_same_radiograph(pacs, tmp_path):
    server, files, answers = pacs
    instance = answers[0]["ID"]
    request = urllib.request.Request(f"{server['url']}/instances/{instance}/file")
    with urllib.request.urlopen(request, timeout=30) as response:
        (tmp_path / "back.dcm").write_bytes(response.read())
    original, back = read_radiograph(files[0]), read_radiograph(tmp_path / "back.dcm")
    np.testing.assert_array_equal(original.numpy(), back.numpy())
    assert back.meta["pixel_spacing_mm"] == original.meta["pixel_spacing_mm"]
    # DICOMweb: the series' instances are listed with their SOP instance UID
    study_uid = get_json(f"{server['dicomweb']}/studies")[0]["0020000D"]["Value"][0]
    series = get_json(f"{server['dicomweb']}/studies/{study_uid}/series")
    assert series and series[0]["00080060"]["Value"][0] in ("DX", "CR")
