"""What the tests' real servers (Orthanc, MONAI Label) share: a free loopback port, start-up polling, missing tools."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing(reason: str) -> None:
    """Skip locally, fail under CI: a server a test needs must not be silently absent there."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it (.ci/run does)")
    pytest.skip(reason, allow_module_level=True)


def wait_until_up(process: subprocess.Popen, probe_url: str, log: Path, name: str, timeout: float) -> None:
    """Poll ``probe_url`` until it answers 200; raise with the log's tail if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode}; log:\n"
                               f"{log.read_text(errors='replace')[-4000:]}")
        try:
            with urllib.request.urlopen(probe_url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not answer {probe_url} within {timeout:.0f} s; log:\n"
                               f"{log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.3)
