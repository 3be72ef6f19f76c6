"""Interactive latency: one radiograph from request to landmarks, cold (a new ``kneel predict`` process, what
each Apply cost before 0.4.0) against warm (the Slicer module's session process, ``kneel worker``), and the
cohort cost per radiograph, all measured in one run on this machine.

    python benchmarks/bench_interactive.py --radiograph samples/synthetic_bilateral_knee.dcm --repeat 3
    python benchmarks/bench_interactive.py --baseline-src ../kneel-0.4.2   # the same, against an earlier version

With ``--baseline-src`` (a checkout of an earlier version), every measure is taken for both in the same run,
interleaved (the baseline's ``kneel_monai`` comes first on its processes' ``PYTHONPATH``; same interpreter,
same packages), and the table gives this version's time as a ratio of the baseline's.

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
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def environment(source: Path | None) -> dict[str, str]:
    """The processes' environment: ``source``'s ``kneel_monai`` first on the path (None: this checkout's)."""
    env = dict(os.environ)
    path = str((source or ROOT).resolve())
    env["PYTHONPATH"] = os.pathsep.join([path, *filter(None, [env.get("PYTHONPATH")])])
    return env


def timed_predict(inputs: list[Path], out: Path, env: dict[str, str]) -> float:
    command = [sys.executable, "-m", "kneel_monai.cli", "predict", *map(str, inputs), "--out", str(out),
               "--format", "json", "--device", "cpu", "--workers", "0", "--no-progress", "--overwrite"]
    started = time.perf_counter()
    # run from the output's folder: `python -m` puts the working directory first on the path
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=out.parent)
    return time.perf_counter() - started


def monai_loaded(env: dict[str, str], cwd: Path) -> bool:
    """Whether the version's inference imports (CLI, predictor, cohort writer) load MONAI."""
    code = ("import sys, kneel_monai.cli, kneel_monai.inference, kneel_monai.cohort, kneel_monai.worker; "
            "print('monai' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env, cwd=cwd)
    return run.stdout.strip().endswith("True")


def warm_latencies(radiograph: Path, work: Path, requests: int, env: dict[str, str]) -> tuple[float, list[float]]:
    """(start-up until ready, [latency of each request]) of one ``kneel worker``."""
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "kneel_monai.cli", "worker", "--device", "cpu"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=env, cwd=work)
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


def measure(label: str, env: dict[str, str], radiograph: Path, work: Path, repeat: int, cohort: int,
            cold: list[float]) -> dict:
    """Warm and cohort measures of one version (its cold runs are taken interleaved by ``main``)."""
    startup, latencies = warm_latencies(radiograph, work / label / "warm", repeat + 1, env)
    copies = []
    for i in range(cohort):
        copies.append(work / "cohort_in" / f"r{i}{radiograph.suffix}")
        copies[-1].parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(radiograph, copies[-1])
    (work / label).mkdir(parents=True, exist_ok=True)
    one = timed_predict(copies[:1], work / label / "cohort1", env)
    many = timed_predict(copies, work / label / "cohortN", env)
    return {"cold_s": cold, "warm_startup_s": startup, "warm_latencies_s": latencies, "cohort_one_s": one,
            "cohort_n_s": many, "cohort_n": cohort, "monai_imported": monai_loaded(env, work),
            "rows": {"cold: kneel predict, one radiograph, whole process": statistics.median(cold),
                     "warm: kneel worker start-up until ready": startup,
                     "warm: first radiograph": latencies[0],
                     "warm: each next radiograph (median)": statistics.median(latencies[1:]),
                     "cohort: per radiograph, whole-process difference": (many - one) / max(cohort - 1, 1)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--radiograph", type=Path, default=ROOT / "samples" / "synthetic_bilateral_knee.dcm")
    parser.add_argument("--repeat", type=int, default=3, help="cold runs and warm requests after the first")
    parser.add_argument("--cohort", type=int, default=4, help="copies of the radiograph for the cohort cost")
    parser.add_argument("--baseline-src", type=Path, help="a checkout of an earlier version to measure beside")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "interactive.json")
    ns = parser.parse_args()

    versions = {"this": environment(None)}
    if ns.baseline_src is not None:
        if not (ns.baseline_src / "kneel_monai" / "__init__.py").is_file():
            parser.error(f"--baseline-src {ns.baseline_src}: no kneel_monai package there")
        versions["baseline"] = environment(ns.baseline_src)
    radiograph = ns.radiograph.resolve()
    work = Path(tempfile.mkdtemp(prefix="kneel_bench_interactive_"))
    results = {}
    try:
        cold: dict[str, list[float]] = {label: [] for label in versions}
        for label, env in versions.items():  # file caches, so the first cold run is not penalised
            (work / label).mkdir(parents=True)
            timed_predict([radiograph], work / label / "warmup", env)
        for i in range(ns.repeat):  # interleaved: a machine that slows down slows both
            for label, env in versions.items():
                cold[label].append(timed_predict([radiograph], work / label / f"cold{i}", env))
        for label, env in versions.items():
            results[label] = measure(label, env, radiograph, work, ns.repeat, ns.cohort, cold[label])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    this = results["this"]["rows"]
    base = results.get("baseline", {}).get("rows")
    cold_s = this["cold: kneel predict, one radiograph, whole process"]
    header = f"| measure ({ns.radiograph.name}, 2 CPU threads) | seconds | x cold |"
    print(header + (" baseline s | x baseline |" if base else ""))
    print("|---|---|---|" + ("---|---|" if base else ""))
    for name, seconds in this.items():
        line = f"| {name} | {seconds:.2f} | {seconds / cold_s:.2f} |"
        print(line + (f" {base[name]:.2f} | {seconds / base[name]:.2f} |" if base else ""))
    print("MONAI imported by the inference path: "
          + ", ".join(f"{label} {r['monai_imported']}" for label, r in results.items()))
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps({"radiograph": ns.radiograph.name, "baseline_src": None if base is None else
                                  ns.baseline_src.name, **results}, indent=1) + "\n")
    print(f"wrote {ns.out}")


if __name__ == "__main__":
    main()
