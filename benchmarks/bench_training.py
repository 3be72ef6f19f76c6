"""Training-step throughput and peak memory on this CPU: release network vs. the others, same run.

One training step is the bundle's: the paper's mixup iteration (two forward passes, one
backward), wing loss, Adam. Each (network, input size) runs in its own process so that its peak
resident memory is its own; figures are samples/s and a ratio against the release network at the
same input size.

    python benchmarks/bench_training.py            # batch 8 at 256 and 450 px
    python benchmarks/bench_training.py --quick    # batch 4 at 256 px only

Writes ``benchmarks/results/bench_training.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

NETWORKS = {
    "release": dict(preset="release"),
    "paper": dict(preset="paper"),
    "lite-n16-d4": dict(preset="paper", width=16, depth=4),  # the shipped CPU models
}


def _worker(network: str, batch: int, size: int, steps: int) -> dict:
    import torch

    from kneel_monai.losses import WingLoss
    from kneel_monai.networks import build_network
    from kneel_monai.transforms import mixup_loss

    torch.manual_seed(0)
    net = build_network(out_points=16, **NETWORKS[network]).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(batch, net.in_channels, size, size)
    y = torch.rand(batch, 16, 2)
    loss_fn = WingLoss()
    times = []
    for step in range(steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        loss, _ = mixup_loss(net, loss_fn, x, y, alpha=0.75, generator=torch.Generator().manual_seed(step))
        loss.backward()
        optimiser.step()
        if step:
            times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    return {"network": network, "batch": batch, "size": size, "median_step_s": median,
            "samples_per_s": batch / median, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_training.json")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.worker:
        network, batch, size, steps = ns.worker
        print(json.dumps(_worker(network, int(batch), int(size), int(steps))))
        return
    from tqdm import tqdm

    shapes = [(4, 256)] if ns.quick else [(8, 256), (8, 450)]  # depth 6 needs >= 256 px
    steps = 2 if ns.quick else 3
    rows = []
    for batch, size in shapes:
        for network in tqdm(NETWORKS, desc=f"batch {batch} at {size} px", unit="network"):
            out = subprocess.run([sys.executable, __file__, "--worker", network, str(batch), str(size), str(steps)],
                                 check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    base = {(r["batch"], r["size"]): r["median_step_s"] for r in rows if r["network"] == "release"}
    print(f"{'network':<13} {'batch':>5} {'size':>5} {'s/step':>8} {'samples/s':>10} {'× release':>10} {'peak MiB':>9}")
    for r in rows:
        r["speedup_vs_release"] = base[(r["batch"], r["size"])] / r["median_step_s"]
        print(f"{r['network']:<13} {r['batch']:>5} {r['size']:>5} {r['median_step_s']:>8.2f} "
              f"{r['samples_per_s']:>10.2f} "
              f"{r['speedup_vs_release']:>10.2f} {r['peak_rss_mib']:>9.0f}")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps({"benchmark": "training step (mixup, wing, Adam)", "baseline": "release network, same "
                                  "batch and size, same run", "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {ns.out}")


if __name__ == "__main__":
    main()
