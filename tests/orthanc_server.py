"""A real Orthanc PACS with its DICOMweb plugin on 127.0.0.1, for tests (Debian packages ``orthanc``,
``orthanc-dicomweb``).

``start_orthanc(folder)`` writes a configuration into ``folder`` (storage, index, free HTTP and DICOM
ports, loopback only, no authentication, the DICOMweb plugin at ``/dicom-web/``), starts ``Orthanc``
and waits until its REST API answers. ``upload(url, files)`` stores DICOM files through the REST API.
When Orthanc or its plugin is missing, ``orthanc_missing()`` says why — the tests skip locally with
that reason and fail under CI (``.ci/run`` installs both).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from servers import free_port, missing, wait_until_up

PLUGIN_FOLDERS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins")
DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"


def _plugin() -> Path | None:
    return next((Path(f) / DICOMWEB_PLUGIN for f in PLUGIN_FOLDERS if (Path(f) / DICOMWEB_PLUGIN).is_file()), None)


def orthanc_missing() -> str | None:
    """Why Orthanc with DICOMweb cannot run here, or None when it can."""
    if shutil.which("Orthanc") is None:
        return "Orthanc is not installed (Debian package 'orthanc')"
    if _plugin() is None:
        return "Orthanc's DICOMweb plugin is not installed (Debian package 'orthanc-dicomweb')"
    return None


def require_orthanc() -> None:
    """Skip (locally) or fail (under CI) when Orthanc with DICOMweb cannot run here."""
    why = orthanc_missing()
    if why:
        missing(why)


@contextlib.contextmanager
def start_orthanc(folder: Path, startup_s: float = 30.0) -> Iterator[dict]:
    """Run Orthanc for the duration of the ``with``; yields ``{"url", "dicomweb", "process", "log"}``."""
    why = orthanc_missing()
    if why:
        raise RuntimeError(why)
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "kneel-test-pacs",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "RemoteAccessAllowed": False,  # loopback only
        "AuthenticationEnabled": False,
        "HttpServerEnabled": True,
        "DicomServerEnabled": True,
        "DicomAet": "KNEELTEST",
        "Plugins": [str(_plugin())],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "WadoRoot": "/wado",
                     "Ssl": False, "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
        "HttpTimeout": 60,
    }
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=1))
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 — closed below
    process = subprocess.Popen(["Orthanc", str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_until_up(process, f"{url}/system", folder / "orthanc.log", "Orthanc", startup_s)
        yield {"url": url, "dicomweb": f"{url}/dicom-web", "process": process, "log": folder / "orthanc.log"}
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def upload(url: str, files: Sequence[Path]) -> list[dict]:
    """Store DICOM files in Orthanc through ``POST /instances``; returns Orthanc's answers."""
    answers = []
    for path in files:
        request = urllib.request.Request(f"{url}/instances", data=Path(path).read_bytes(), method="POST",
                                         headers={"Content-Type": "application/dicom"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answers.append(json.loads(response.read()))
    return answers
