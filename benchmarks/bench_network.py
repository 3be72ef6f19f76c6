"""Forward latency, throughput and peak memory of the KNEEL networks on this machine's CPU.

Baseline: the release configuration (``build_network("release")``: N 24, d 4, 3×3 "1×1"
convs, 3 channels) run eagerly under ``torch.no_grad()``. Every other row is reported as a
speed ratio against the baseline of the same input shape, measured in the same run.

Each (network, variant, shape) runs in its own subprocess so that peak memory (the process's
maximum resident set size) belongs to that row alone.

    python benchmarks/bench_network.py              # full table (a few minutes on 2 cores)
    python benchmarks/bench_network.py --quick      # batch 1 only, fewer repeats

Writes ``benchmarks/results/bench_network.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

NETWORKS = {
    # name: (build_network kwargs, description)
    "release": (dict(preset="release"), "release config: N24 d4, 3x3 '1x1', 3 ch (baseline)"),
    "paper": (dict(preset="paper"), "paper config: N24 d6, 1x1, 1 ch"),
    "lite-n16-d4": (dict(preset="paper", width=16, depth=4), "candidate: N16 d4, 1x1, 1 ch (untrained)"),
}
VARIANTS = {
    "eager": "torch.no_grad, NCHW (baseline variant)",
    "inference_mode": "torch.inference_mode",
    "channels_last": "inference_mode + channels-last",
    "fused": "inference_mode + conv-BN folded",
    "fused+cl": "inference_mode + conv-BN folded + channels-last",
    "torchscript": "trace + freeze + optimize_for_inference",
}


def _worker(network: str, variant: str, batch: int, size: int, repeats: int) -> dict:
    import torch

    from kneel_monai.networks import build_network, fuse_conv_bn, prepare_for_inference

    torch.manual_seed(0)
    kwargs = NETWORKS[network][0]
    net = build_network(out_points=16, **kwargs).eval()
    x = torch.randn(batch, net.in_channels, size, size)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    grad_ctx = torch.no_grad if variant == "eager" else torch.inference_mode
    if variant in ("channels_last", "fused+cl"):
        net = prepare_for_inference(net, fuse=variant == "fused+cl", channels_last=True)
        x = x.contiguous(memory_format=torch.channels_last)
    elif variant == "fused":
        net = fuse_conv_bn(net)
    elif variant == "torchscript":
        with torch.no_grad():
            net = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, x)))

    with grad_ctx():
        net(x)  # warm-up (and TorchScript's profiling run)
        net(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "network": network,
        "variant": variant,
        "batch": batch,
        "size": size,
        "median_s": median,
        "min_s": times[0],
        "images_per_s": batch / median,
        "peak_rss_mib": rss_after / 1024,
        "forward_rss_delta_mib": (rss_after - rss_before) / 1024,
        "threads": torch.get_num_threads(),
    }


def _run_worker(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 1 only, 3 repeats")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--variants", nargs="+", default=["eager", "inference_mode", "fused+cl", "torchscript"],
                        choices=list(VARIANTS), help="default: eager, inference_mode, fused+cl, torchscript")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_network.json")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    ns = parser.parse_args()

    if ns.worker:
        network, variant, batch, size, repeats = ns.worker
        print(json.dumps(_worker(network, variant, int(batch), int(size), int(repeats))))
        return

    from tqdm import tqdm

    shapes = [(1, 450), (1, 256)] if ns.quick else [(1, 450), (2, 450), (8, 450), (1, 256), (2, 256), (8, 256)]
    repeats = 3 if ns.quick else 5
    jobs = [(n, v, b, s) for (b, s) in shapes for n in ns.networks for v in ns.variants]
    if ("release", "eager") not in {(n, v) for n, v, _, _ in jobs}:
        jobs = [("release", "eager", b, s) for (b, s) in shapes] + jobs
    rows = []
    for network, variant, batch, size in tqdm(jobs, desc="benchmark", unit="run"):
        reps = repeats if batch * size * size < 8 * 450 * 450 else 3  # the largest shape: 3 repeats
        rows.append(_run_worker([network, variant, str(batch), str(size), str(reps)]))

    baseline = {(r["batch"], r["size"]): r for r in rows if r["network"] == "release" and r["variant"] == "eager"}
    for r in rows:
        r["speedup_vs_release_eager"] = baseline[(r["batch"], r["size"])]["median_s"] / r["median_s"]

    header = f"{'network':<13} {'variant':<15} {'batch':>5} {'size':>5} {'ms/batch':>9} {'img/s':>7} " \
             f"{'× base':>7} {'peak MiB':>9} {'Δ MiB':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['network']:<13} {r['variant']:<15} {r['batch']:>5} {r['size']:>5} {r['median_s'] * 1e3:>9.1f} "
            f"{r['images_per_s']:>7.2f} {r['speedup_vs_release_eager']:>7.2f} {r['peak_rss_mib']:>9.0f} "
            f"{r['forward_rss_delta_mib']:>7.0f}"
        )
    import torch

    ns.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "network forward",
        "baseline": "release / eager (same batch and size, same run)",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "torch": torch.__version__, "threads": rows[0]["threads"]},
        "networks": {k: v[1] for k, v in NETWORKS.items()},
        "variants": VARIANTS,
        "rows": rows,
    }
    ns.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {ns.out}")


if __name__ == "__main__":
    main()
