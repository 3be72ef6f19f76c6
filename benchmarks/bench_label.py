"""MONAI Label app benchmark: infer latency through the server vs. in process, and label submissions per second.

    OMP_NUM_THREADS=1 python benchmarks/bench_label.py [--n 5] [--clients 4] [--seconds 10] [--json out.json]

Starts a real server (``tests/label_server.py``) on 127.0.0.1 over a temporary studies folder of
synthetic radiographs. Reports the median infer latency both ways and their ratio (the HTTP +
MONAI Label overhead), and how many ``.mrk.json`` submissions per second ``--clients`` loopback
clients sustain with every one accounted for afterwards (kept revisions + the current label).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5, help="infer repetitions (after one warm-up)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", help="write the numbers here")
    ns = ap.parse_args(argv)

    import requests
    from label_server import running_label_server

    from kneel_monai.inference import KneelPredictor, default_model_dirs
    from kneel_monai.synthetic.generate import generate_radiograph, write_radiograph

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, gt = write_radiograph(generate_radiograph(9_500_900, spacing_mm=0.3, size=(1100, 1300)), tmp / "studies",
                                 "bench_0")
        gt.unlink()
        image = tmp / "studies" / "bench_0.dcm"
        predictor = KneelPredictor(*default_model_dirs(), device="cpu")
        predictor.predict_file(image)
        local = []
        for _ in range(ns.n):
            t = time.perf_counter()
            predictor.predict_file(image)
            local.append(time.perf_counter() - t)
        del predictor
        with running_label_server(tmp / "studies", tmp / "state") as url:
            def infer(output):
                r = requests.post(f"{url}/infer/kneel_landmarks", params={"image": "bench_0", "output": output})
                r.raise_for_status()
                return r

            label = infer("image").content
            remote = []
            for _ in range(ns.n):
                t = time.perf_counter()
                infer("json")
                remote.append(time.perf_counter() - t)
            sent = [0] * ns.clients
            errors: list[str] = []
            stop = time.perf_counter() + ns.seconds

            def client(k):
                while time.perf_counter() < stop:
                    r = requests.put(f"{url}/datastore/label", params={"image": "bench_0", "tag": "final"},
                                     files={"label": ("bench_0.mrk.json", label)})
                    if r.status_code != 200:
                        errors.append(r.text)
                        return
                    sent[k] += 1

            t0 = time.perf_counter()
            threads = [threading.Thread(target=client, args=(k,)) for k in range(ns.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
            final = tmp / "studies" / "labels" / "final"
            kept = len(list((final / ".history").glob("bench_0.v*"))) + int((final / "bench_0.mrk.json").exists())
            version = requests.get(url + "/datastore/", params={"output": "all"}).json()[
                "objects"]["bench_0"]["labels"]["final"]["info"]["version"]
    out = {"infer_in_process_s": statistics.median(local), "infer_server_s": statistics.median(remote),
           "http_overhead_ratio": statistics.median(remote) / statistics.median(local),
           "label_submissions": sum(sent), "label_submissions_per_s": sum(sent) / elapsed,
           "labels_kept": kept, "datastore_version": version, "lost": sum(sent) - kept, "errors": len(errors),
           "clients": ns.clients}
    for k, v in out.items():
        print(f"{k:28s} {v:.4g}" if isinstance(v, float) else f"{k:28s} {v}")
    if ns.json:
        Path(ns.json).write_text(json.dumps(out, indent=2))
    return 0 if out["lost"] == 0 and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
