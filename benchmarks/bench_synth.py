"""Time to generate one synthetic radiograph on this machine's CPU, split into render / noise / write.

* ``render``: projection of bones and soft tissue at ≈0.3 mm, processing and display curve;
* ``noise``: the full-resolution part (upsampling, trabecular texture, detector noise and blur,
  collimation, markers);
* ``write``: encoding and writing one file (+ its ground-truth JSON), per format.

Each size runs a warm-up radiograph first (imports, caches), then ``--repeats`` seeds; the
table shows the median over seeds.

    python benchmarks/bench_synth.py            # sizes up to 2900 x 2900, 3 repeats
    python benchmarks/bench_synth.py --quick    # two sizes, 1 repeat

Writes ``benchmarks/results/bench_synth.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

# (H, W) pixels, spacing mm
SIZES = [((1200, 1500), 0.25), ((2000, 2500), 0.15), ((2500, 2000), 0.15), ((2900, 2900), 0.14)]
QUICK_SIZES = [((1200, 1500), 0.25), ((2500, 2000), 0.15)]
WRITES = {
    "png16": ("png", {}),
    "dcm": ("dcm", {"transfer_syntax": "explicit_vr_little_endian", "bits_stored": 12}),
    "dcm_j2k": ("dcm", {"transfer_syntax": "jpeg2000_lossless", "bits_stored": 12}),
}


def _measure(size, spacing, seed, writes, folder: Path) -> dict:
    from kneel_monai.synthetic.generate import generate_radiograph, write_radiograph

    t0 = time.perf_counter()
    sample = generate_radiograph(seed, size=size, spacing_mm=spacing)
    total = time.perf_counter() - t0
    row = {"render": sample.timings["render"], "noise": sample.timings["noise"], "generate_total": total}
    for name, (fmt, opts) in writes.items():
        t = time.perf_counter()
        try:
            write_radiograph(sample, folder, f"b{seed}_{name}", fmt, **opts)
        except (ImportError, NotImplementedError) as err:  # no DICOM writer / encoder here
            row[f"write_{name}"] = None
            row.setdefault("skipped", {})[name] = str(err).splitlines()[0]
            continue
        row[f"write_{name}"] = time.perf_counter() - t
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_synth.json"))
    ns = parser.parse_args(argv)
    sizes = QUICK_SIZES if ns.quick else SIZES
    repeats = 1 if ns.quick else max(1, ns.repeats)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for size, spacing in sizes:
            _measure(size, spacing, 10_000, {}, folder)  # warm-up
            runs = [_measure(size, spacing, seed, WRITES, folder) for seed in range(repeats)]
            keys = [k for k in runs[0] if k != "skipped"]
            med = {}
            for k in keys:
                vals = [r[k] for r in runs if r.get(k) is not None]
                med[k] = statistics.median(vals) if vals else None
            rows.append({"size_hw": list(size), "spacing_mm": spacing, "repeats": repeats, "median_s": med,
                         "skipped": runs[0].get("skipped", {})})

    def f(v):
        return "   n/a" if v is None else f"{v:6.3f}"

    header = (f"{'H x W':>11} {'mm':>5} | {'render':>6} {'noise':>6} {'total':>6} | "
              + " ".join(f"{n:>8}" for n in WRITES))
    print("generation time per radiograph, seconds (median of seeds); write columns are per file")
    print(header)
    print("-" * len(header))
    for r in rows:
        m = r["median_s"]
        print(f"{r['size_hw'][0]:>5} x {r['size_hw'][1]:<5} {r['spacing_mm']:>5} | {f(m['render'])} {f(m['noise'])} "
              f"{f(m['generate_total'])} | " + " ".join(f"{f(m.get('write_' + n)):>8}" for n in WRITES))
    result = {
        "benchmark": "bench_synth",
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine()},
        "units": "seconds",
        "rows": rows,
    }
    out = Path(ns.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
