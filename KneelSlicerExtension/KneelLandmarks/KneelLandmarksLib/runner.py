"""Run ``kneel predict`` in a background process and poll it, so Slicer's GUI never waits.

The design of SlicerMONAIAuto3DSeg and SlicerTotalSegmentator: the radiograph is written to a
temporary folder, ``PythonSlicer -m kneel_monai.cli predict …`` runs in its own process, a reader
thread collects its output lines, and the module's ``qt.QTimer`` calls :meth:`PredictionJob.poll`
a few times a second. :meth:`PredictionJob.cancel` kills the process (with its children: the
``PythonSlicer`` launcher starts the real interpreter as a child) and removes the folder.
Nothing here touches the scene.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CANCELLED", "DONE", "FAILED", "RUNNING", "JobStatus", "PredictionJob", "WarmJob", "WarmWorker",
           "default_python", "predict_command", "worker_command"]

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"


#: runs ``kneel_monai.cli`` from a source folder given as the first argument (a copy not pip-installed)
_FROM_SOURCE = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from kneel_monai.cli import main; "
                "sys.exit(main(sys.argv[1:]))")


def predict_command(python: str, input_file: str | os.PathLike, out_dir: str | os.PathLike, device: str = "auto",
                    refine: bool = True, model: str | os.PathLike | None = None,
                    package_root: str | os.PathLike | None = None) -> list[str]:
    """The ``kneel predict`` command line for one radiograph (JSON output only).

    ``package_root``: a folder holding ``kneel_monai/`` to run it from (else the installed package).
    """
    start = ["-c", _FROM_SOURCE, str(package_root)] if package_root else ["-m", "kneel_monai.cli"]
    command = [str(python), *start, "predict", str(input_file), "--out", str(out_dir),
               "--format", "json", "--device", device, "--workers", "0", "--no-progress", "--overwrite"]
    if not refine:
        command.append("--no-refine")
    if model:
        command += ["--model", str(model)]
    return command


def worker_command(python: str, device: str = "auto", refine: bool = True, model: str | os.PathLike | None = None,
                   package_root: str | os.PathLike | None = None) -> list[str]:
    """The ``kneel worker`` command line: a process that keeps the models loaded (:class:`WarmWorker`)."""
    start = ["-c", _FROM_SOURCE, str(package_root)] if package_root else ["-m", "kneel_monai.cli"]
    command = [str(python), *start, "worker", "--device", device]
    if not refine:
        command.append("--no-refine")
    if model:
        command += ["--model", str(model)]
    return command


@dataclass
class JobStatus:
    """``state``: running, done, failed or cancelled; ``message``: a line for the panel."""

    state: str
    message: str
    elapsed_s: float
    lines: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state != RUNNING


def _running_message(lines: Sequence[str]) -> str:
    """What a running ``kneel predict`` is doing, from its output so far."""
    for line in reversed(lines):
        match = re.match(r"models: .* on (\S+?); refinement (\w+)", line)
        if match:
            return f"running the model on {match.group(1)} (refinement {match.group(2)})"
    return "starting: loading PyTorch and the models"


def _failure_message(lines: Sequence[str], returncode: int) -> str:
    """The most telling line of a failed ``kneel predict`` run."""
    text = [line.strip() for line in lines if line.strip()]
    for line in text:
        if "kneel predict: error:" in line:
            return line.split("kneel predict: error:", 1)[1].strip()
    for line in text:
        if line.startswith("FAILED "):
            return line[len("FAILED "):]
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the prediction process was killed ({name}), e.g. out of memory"
    tail = next((line for line in reversed(text) if not line.startswith(("File ", "^", "~"))), "")
    return f"the prediction process failed (exit code {returncode}){': ' + tail if tail else ''}"


def _wait(poll, timeout: float | None, interval: float) -> JobStatus:
    """Call ``poll`` until the job has finished (scripts and tests; the GUI polls from a timer instead)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = poll()
        if status.finished:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"the prediction did not finish within {timeout} s")
        time.sleep(interval)


class PredictionJob:
    """One background prediction; ``output_json`` is what ``kneel predict`` writes for the input.

    Args:
        command: the full command line (:func:`predict_command`).
        work_dir: the temporary folder holding the input and the outputs; removed by :meth:`close`
            (called by :meth:`cancel` and by :meth:`result` once read).
        output_json: the prediction JSON the command writes.
        env: the process environment (Slicer: the launcher's startup environment).
    """

    def __init__(self, command: Sequence[str], work_dir: str | os.PathLike, output_json: str | os.PathLike,
                 env: dict[str, str] | None = None) -> None:
        self.command = [str(c) for c in command]
        self.work_dir = Path(work_dir)
        self.output_json = Path(output_json)
        self.env = env
        self.process: subprocess.Popen | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=400)
        self._reader: threading.Thread | None = None
        self._started = 0.0
        self._cancelled = False
        self._final: JobStatus | None = None

    @classmethod
    def new_work_dir(cls) -> Path:
        return Path(tempfile.mkdtemp(prefix="kneel-slicer-"))

    def start(self) -> PredictionJob:
        self._started = time.monotonic()
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace",
                                        env=self.env, **_new_session_kwargs())
        self._reader = threading.Thread(target=self._read_output, name="kneel-predict-output", daemon=True)
        self._reader.start()
        return self

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line.rstrip("\n"))

    @property
    def lines(self) -> list[str]:
        return list(self._lines)

    def poll(self) -> JobStatus:
        """Where the job stands, without waiting."""
        if self._final is not None:
            return self._final
        if self.process is None:
            raise RuntimeError("the job was not started")
        elapsed = time.monotonic() - self._started
        returncode = self.process.poll()
        if returncode is None:
            return JobStatus(RUNNING, _running_message(self._lines), elapsed, self.lines)
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._cancelled:
            status = JobStatus(CANCELLED, "cancelled", elapsed, self.lines)
        elif returncode == 0 and self.output_json.is_file():
            status = JobStatus(DONE, f"prediction done in {elapsed:.1f} s", elapsed, self.lines)
        elif returncode == 0:
            status = JobStatus(FAILED, f"the prediction process wrote no result ({self.output_json.name})",
                               elapsed, self.lines)
        else:
            status = JobStatus(FAILED, _failure_message(self._lines, returncode), elapsed, self.lines)
        self._final = status
        return status

    def wait(self, timeout: float | None = None, interval: float = 0.1) -> JobStatus:
        """Poll until finished (scripts and tests; the GUI polls from a timer instead)."""
        return _wait(self.poll, timeout, interval)

    def result(self) -> dict[str, Any]:
        """The prediction JSON of a finished job (and the temporary folder is removed)."""
        status = self.poll()
        if status.state != DONE:
            raise RuntimeError(f"no result: the job is {status.state} ({status.message})")
        try:
            return json.loads(self.output_json.read_text(encoding="utf-8"))
        finally:
            self.close()

    def cancel(self) -> None:
        """Stop the process (and its children) and remove the temporary folder."""
        self._cancelled = True
        if self.process is not None:
            _kill_process_group(self.process)
        self.poll()
        self.close()

    def close(self) -> None:
        """Remove the temporary folder (the process must have ended)."""
        if self.process is not None and self.process.poll() is None:
            return
        if self.process is not None and self.process.stdout is not None:
            if self._reader is not None:
                self._reader.join(timeout=5)
            self.process.stdout.close()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def __del__(self) -> None:  # a job dropped while running must not leave a process behind
        try:
            if self.process is not None and self.process.poll() is None:
                self.cancel()
        except Exception:  # noqa: BLE001 — interpreter shutdown
            pass


def _kill_process_group(process: subprocess.Popen) -> None:
    """Kill a process started in its own group (the launcher and the interpreter it started)."""
    if process.poll() is not None:
        return
    try:
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
        else:
            os.killpg(process.pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass
    try:
        process.kill()
    except OSError:
        pass
    process.wait(timeout=10)


def _new_session_kwargs() -> dict[str, Any]:
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    return {"start_new_session": True}  # its own process group: a kill reaches the launcher's children too


class WarmWorker:
    """One ``kneel worker`` process kept for the session: PyTorch and the models load once, each radiograph
    after the first costs only its prediction. A worker that died (killed, out of memory, cancelled) is
    started again by the next :meth:`submit`, whose first status says so; a radiograph that fails leaves it
    usable. Threads read its answers and its log, so nothing here waits on it."""

    def __init__(self, command: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.command = [str(c) for c in command]
        self.env = env
        self.process: subprocess.Popen | None = None
        self.ready: dict[str, Any] | None = None
        self.starts = 0
        self.ended_because = ""  # why the previous process is gone (said by the next job)
        self._answers: dict[str, dict[str, Any]] = {}
        self._log: collections.deque[str] = collections.deque(maxlen=400)
        self._lock = threading.Lock()
        self._next_id = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _start(self) -> None:
        self.ready, self._answers, self.ended_because = None, {}, ""
        self._log.clear()
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                                        env=self.env, **_new_session_kwargs())
        self.starts += 1
        process = self.process
        threading.Thread(target=self._read_answers, args=(process,), name="kneel-worker-answers", daemon=True).start()
        threading.Thread(target=self._read_log, args=(process,), name="kneel-worker-log", daemon=True).start()

    def _read_answers(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                self._log.append(line.rstrip("\n"))
                continue
            with self._lock:
                if process is not self.process:
                    return
                if message.get("ready"):
                    self.ready = message
                elif message.get("id") is not None:
                    self._answers[str(message["id"])] = message

    def _read_log(self, process: subprocess.Popen) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self._log.append(line.rstrip("\n"))

    @property
    def log(self) -> list[str]:
        return list(self._log)

    def submit(self, input_file: str | os.PathLike, out_dir: str | os.PathLike, work_dir: str | os.PathLike
               ) -> WarmJob:
        """Send one radiograph; ``work_dir`` (holding the input and ``out_dir``) belongs to the returned job."""
        restarted = ""
        if not self.alive:
            if self.process is not None:
                restarted = (f"restarted the prediction process (the previous one ended: "
                             f"{self.ended_because or _failure_message(self.log, self.process.returncode)}); ")
            self._start()
        self._next_id += 1
        ident = str(self._next_id)
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps({"id": ident, "input": str(input_file), "out": str(out_dir)}) + "\n")
            self.process.stdin.flush()
        except OSError:  # it died between the check and the write: the job reports it
            pass
        return WarmJob(self, ident, self.process, work_dir, restarted)

    def answer(self, ident: str) -> dict[str, Any] | None:
        with self._lock:
            return self._answers.pop(ident, None)

    def kill(self, reason: str) -> None:
        """End the process now (cancel, or a job that must not go on); the next submit starts a new one."""
        self.ended_because = reason
        if self.process is not None:
            _kill_process_group(self.process)

    def stop(self) -> None:
        """End the process at the end of the session: close its input (it exits), kill it if it does not."""
        if self.process is None:
            return
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
            self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            _kill_process_group(self.process)
        self.ended_because = "stopped"


class WarmJob:
    """One radiograph sent to a :class:`WarmWorker`: the same ``poll``/``wait``/``result``/``cancel`` as
    :class:`PredictionJob`, so the panel drives either the same way."""

    def __init__(self, worker: WarmWorker, ident: str, process: subprocess.Popen, work_dir: str | os.PathLike,
                 restarted: str = "") -> None:
        self.worker, self.ident, self.process = worker, ident, process
        self.work_dir = Path(work_dir)
        self.restarted = restarted
        self._started = time.monotonic()
        self._final: JobStatus | None = None
        self._answer: dict[str, Any] | None = None

    @property
    def lines(self) -> list[str]:
        return self.worker.log

    def poll(self) -> JobStatus:
        if self._final is not None:
            return self._final
        elapsed = time.monotonic() - self._started
        answer = self.worker.answer(self.ident)
        if answer is not None:
            self._answer = answer
            if answer.get("ok"):
                self._final = JobStatus(DONE, f"{self.restarted}prediction done in {elapsed:.1f} s", elapsed, [])
            else:
                self._final = JobStatus(FAILED, str(answer.get("error", "the prediction failed")), elapsed, [])
            return self._final
        if self.process.poll() is not None:  # died without answering: killed, out of memory, crashed
            reason = self.worker.ended_because or _failure_message(self.worker.log, self.process.returncode)
            state = CANCELLED if self.worker.ended_because == "cancelled" else FAILED
            message = "cancelled" if state == CANCELLED else (
                f"{reason}; the next Apply starts the prediction process again")
            self._final = JobStatus(state, message, elapsed, self.lines)
            return self._final
        waiting = "running the model" if self.worker.ready else "starting: loading PyTorch and the models"
        return JobStatus(RUNNING, self.restarted + waiting, elapsed, [])

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> JobStatus:
        return _wait(self.poll, timeout, interval)

    def result(self) -> dict[str, Any]:
        status = self.poll()
        if status.state != DONE or self._answer is None:
            raise RuntimeError(f"no result: the job is {status.state} ({status.message})")
        try:
            return json.loads(Path(self._answer["json"]).read_text(encoding="utf-8"))
        finally:
            self.close()

    def cancel(self) -> None:
        """Stop this radiograph: the worker is killed (a prediction cannot be interrupted halfway) and
        started again by the next Apply."""
        if self.poll().finished:
            self.close()
            return
        self.worker.kill("cancelled")
        self._final = JobStatus(CANCELLED, "cancelled", time.monotonic() - self._started, [])
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)


def default_python() -> str:
    """The interpreter for the background process: ``PythonSlicer`` inside Slicer, else this one."""
    return shutil.which("PythonSlicer") or sys.executable
