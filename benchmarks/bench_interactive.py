"""Interactive latency: one radiograph from request to landmarks, cold (a new ``kneel predict`` process, what
each Apply cost before 0.4.0) against warm (the Slicer module's session process, ``kneel worker``), and the
cohort cost per radiograph, all measured in one run on this machine.

    python benchmarks/bench_interactive.py --radiograph samples/synthetic_bilateral_knee.dcm --repeat 3

* cold: ``kneel predict FILE --format json`` as a whole process (start-up + models + prediction), median;
* warm start-up: ``kneel worker`` until it says it is ready (PyTorch, MONAI and the models loaded);
* warm first / warm next: the first radiograph the worker gets (it also pays the readers' first use),
  then the median of the following ones — what a user waits for each Apply after the first;
* cohort per radiograph: (``kneel predict`` on N copies − on 1) / (N − 1), whole processes.

Prints a table and writes ``benchmarks/results/interactive.json``. Timings are never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_predict(inputs: list[Path], out: Path) -> float:
    command = [sys.executable, "-m", "kneel_monai.cli", "predict", *map(str, inputs), "--out", str(out),
               "--format", "json", "--device", "cpu", "--workers", "0", "--no-progress", "--overwrite"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def warm_latencies(radiograph: Path, work: Path, requests: int) -> tuple[float, list[float]]:
    """(start-up until ready, [latency of each request]) of one ``kneel worker``."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "kneel_monai.cli", "worker", "--device", "cpu"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None and process.stdin is not None
        ready = json.loads(process.stdout.readline())
        assert ready.get("ready"), ready
        startup = time.perf_counter() - started
        latencies = []
        for i in range(requests):
            sent = time.perf_counter()
            process.stdin.write(json.dumps({"id": str(i), "input": str(radiograph), "out": str(work / str(i))}) + "\n")
            process.stdin.flush()
            answer = json.loads(process.stdout.readline())
            assert answer["ok"], answer
            latencies.append(time.perf_counter() - sent)
        return startup, latencies
    finally:
        process.stdin.close()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--radiograph", type=Path, default=ROOT / "samples" / "synthetic_bilateral_knee.dcm")
    parser.add_argument("--repeat", type=int, default=3, help="cold runs and warm requests after the first")
    parser.add_argument("--cohort", type=int, default=4, help="copies of the radiograph for the cohort cost")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "interactive.json")
    ns = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kneel_bench_interactive_"))
    try:
        timed_predict([ns.radiograph], work / "warmup")  # file caches, so the first cold run is not penalised
        cold = [timed_predict([ns.radiograph], work / f"cold{i}") for i in range(ns.repeat)]
        startup, latencies = warm_latencies(ns.radiograph, work / "warm", ns.repeat + 1)
        copies = []
        for i in range(ns.cohort):
            copies.append(work / "cohort_in" / f"r{i}{ns.radiograph.suffix}")
            copies[-1].parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ns.radiograph, copies[-1])
        one = timed_predict(copies[:1], work / "cohort1")
        many = timed_predict(copies, work / "cohortN")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cold_s = statistics.median(cold)
    warm_next = statistics.median(latencies[1:])
    rows = [
        ("cold: kneel predict, one radiograph, whole process (baseline)", cold_s),
        ("warm: kneel worker start-up until ready", startup),
        ("warm: first radiograph", latencies[0]),
        ("warm: each next radiograph (median)", warm_next),
        ("cohort: per radiograph, whole-process difference", (many - one) / max(ns.cohort - 1, 1)),
    ]
    print(f"| measure ({ns.radiograph.name}, 2 CPU threads) | seconds | x cold |")
    print("|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {seconds / cold_s:.2f} |")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps({"radiograph": ns.radiograph.name, "cold_s": cold, "warm_startup_s": startup,
                                  "warm_latencies_s": latencies, "cohort_one_s": one, "cohort_n_s": many,
                                  "cohort_n": ns.cohort, "rows": {n: round(s, 3) for n, s in rows}}, indent=1) + "\n")
    print(f"wrote {ns.out}")


if __name__ == "__main__":
    main()
