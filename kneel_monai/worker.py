"""A warm prediction process for interactive faces: models loaded once, one radiograph per request.

``kneel worker`` reads requests from stdin, one JSON object per line, and answers each with one JSON
line on stdout (everything else it prints goes to stderr, so the two never mix)::

    → {"id": "1", "input": "/tmp/x/radiograph.nrrd", "out": "/tmp/x/out"}
    ← {"id": "1", "ok": true, "json": "/tmp/x/out/radiograph.json", "seconds": 0.9}
    ← {"id": "2", "ok": false, "error": "radiograph.dcm: truncated DICOM ..."}

The first line it writes is ``{"ready": true, "device": ..., "models": [...], "pid": ...}`` once the
models are loaded. Each request writes what ``kneel predict --format json --overwrite`` would into
``out``; a radiograph that fails is answered with the reason and the process goes on. End of input
(the client closing stdin) ends it. The 3D Slicer module keeps one such process for its session.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from typing import IO, Any

__all__ = ["serve"]


def _answer(channel: IO[str], message: dict[str, Any]) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def _handle(predictor: Any, request: dict[str, Any], spacing_mm: Any) -> dict[str, Any]:
    from .cohort import predict_paths

    ident = request.get("id")
    source, out = request.get("input"), request.get("out")
    if not isinstance(source, str) or not isinstance(out, str) or not source or not out:
        return {"id": ident, "ok": False, "error": "a request needs 'input' (a radiograph file) and 'out' (a folder)"}
    started = time.perf_counter()
    summary = predict_paths(predictor, source, out, formats=["json"], spacing_mm=request.get("spacing_mm", spacing_mm),
                            progress=False, overwrite=True, workers=0)
    if summary["failed"]:
        return {"id": ident, "ok": False, "error": summary["failed"][0]["error"]}
    if not summary["results"]:
        return {"id": ident, "ok": False, "error": f"{source}: not a radiograph this reader takes"}
    written = summary["results"][0]["outputs"]["json"]
    return {"id": ident, "ok": True, "json": written, "seconds": round(time.perf_counter() - started, 3)}


def serve(predictor: Any, requests: Iterable[str], answers: IO[str], spacing_mm: Any = None) -> int:
    """Answer each request line until the input ends; returns how many failed."""
    failed = 0
    for line in requests:
        line = line.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
        except ValueError as err:
            _answer(answers, {"id": None, "ok": False, "error": f"not a request: {err}"})
            failed += 1
            continue
        try:
            answer = _handle(predictor, request, spacing_mm)
        except Exception as err:  # noqa: BLE001 — one radiograph failing leaves the process usable for the next
            answer = {"id": request.get("id"), "ok": False, "error": f"{type(err).__name__}: {err}"}
        failed += not answer["ok"]
        _answer(answers, answer)
    return failed


def run_worker(predictor: Any, models: list[str]) -> int:
    """The ``kneel worker`` loop on this process's stdin/stdout."""
    answers = sys.stdout
    sys.stdout = sys.stderr  # whatever the pipeline prints must not reach the protocol channel
    _answer(answers, {"ready": True, "device": str(predictor.device), "models": models, "pid": os.getpid()})
    serve(predictor, sys.stdin, answers)
    return 0
