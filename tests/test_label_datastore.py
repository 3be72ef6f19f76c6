"""The app's datastore index under concurrency, in process (no server): real files, real MONAI Label classes.

The index (``datastore_v2.json``) is changed by request handlers, by MONAI Label's file watcher (a refresh on
every file event, in its own thread) and by training/scoring subprocesses (a reconcile when they start). These
tests run those actors at once and check that no label ever drops out of the index, and that a reader never
sees a half-rebuilt one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
from label_server import require_monailabel

require_monailabel()

from kneel_monai.inference import KneeResult, RadiographResult  # noqa: E402
from kneel_monai.io.dicom_writer import write_dicom  # noqa: E402
from kneel_monai.io.markups import markups_dict  # noqa: E402
from kneel_monai.label.datastore import KneelDatastore  # noqa: E402

N_IMAGES, SIZE, SPACING = 8, (240, 320), (0.3, 0.3)


def _label(path, seed: int) -> str:
    rng = np.random.default_rng(seed)
    knees = {s: KneeResult(s, True, landmarks_px=rng.uniform([10, 10], [SIZE[1] - 10, SIZE[0] - 10], size=(16, 2)),
                           confidence=np.full(16, 0.9)) for s in ("R", "L")}
    path.write_text(json.dumps(markups_dict(RadiographResult("x.dcm", SIZE, SPACING, "test", knees))))
    return str(path)


@pytest.fixture
def studies(tmp_path):
    folder = tmp_path / "studies"
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        write_dicom(folder / f"img_{i}.dcm", rng.integers(0, 4095, SIZE, dtype=np.uint16), SPACING)
    labels = tmp_path / "uploads"
    labels.mkdir()
    return folder, [_label(labels / f"l{k}.mrk.json", k) for k in range(3)]


def _index_finals(folder) -> dict[str, int]:
    objects = json.loads((folder / "datastore_v2.json").read_text())["objects"]
    return {k: v["labels"]["final"]["info"]["version"] for k, v in objects.items() if "final" in v["labels"]}


def test_labels_saved_during_refreshes_all_stay_in_the_index(studies):
    """Submissions from 4 threads while the watcher's refresh runs over and over: every revision is kept."""
    folder, uploads = studies
    ds = KneelDatastore(str(folder), auto_reload=True)  # the real file watcher runs too
    stop, errors, seen = threading.Event(), [], []

    def refresher():
        while not stop.is_set():
            ds.refresh()

    def reader():  # what /datastore, next sample and training read meanwhile
        while not stop.is_set():
            seen.append(len(ds.list_images()))

    def submitter(k):
        try:
            for rev, upload in enumerate(uploads):
                for i in range(k, N_IMAGES, 4):
                    ds.save_label(f"img_{i}", upload, "final", {"rev": rev})
        except Exception as err:  # noqa: BLE001 — reported below
            errors.append(err)

    background = [threading.Thread(target=refresher), threading.Thread(target=reader)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: the interleavings that lost labels become likely
    workers = [threading.Thread(target=submitter, args=(k,)) for k in range(4)]
    for t in background + workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    for t in background:
        t.join()
    sys.setswitchinterval(interval)
    ds._observer.stop()

    assert not errors, errors
    want = {f"img_{i}": len(uploads) for i in range(N_IMAGES)}
    assert _index_finals(folder) == want  # on disk
    assert sorted(ds.get_labeled_images()) == sorted(want)  # in memory
    assert seen and set(seen) == {N_IMAGES}, f"a reader saw {sorted(set(seen))} images, not always {N_IMAGES}"
    history = sorted(p.name for p in (folder / "labels" / "final" / ".history").iterdir())
    assert len(history) == N_IMAGES * (len(uploads) - 1)


_SUBPROCESS = """
import sys
from kneel_monai.label.datastore import KneelDatastore
for _ in range(int(sys.argv[2])):
    ds = KneelDatastore(sys.argv[1])  # what a training or scoring subprocess does when it starts
print(len(ds.get_labeled_images()))
"""


def test_a_starting_subprocess_never_loses_a_label_being_saved(studies):
    """Processes that open the datastore (and reconcile it) while labels are being saved lose none of them."""
    folder, uploads = studies
    ds = KneelDatastore(str(folder))
    procs = [subprocess.Popen([sys.executable, "-c", _SUBPROCESS, str(folder), "8"], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for rev, upload in enumerate(uploads):
        for i in range(N_IMAGES):
            ds.save_label(f"img_{i}", upload, "final", {"rev": rev})
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert _index_finals(folder) == {f"img_{i}": len(uploads) for i in range(N_IMAGES)}
    fresh = KneelDatastore(str(folder))
    assert len(fresh.get_labeled_images()) == N_IMAGES


def test_an_index_changed_by_another_process_is_read_again(studies):
    """A second datastore on the same folder (another server, a subprocess) sees labels the first one saved,
    even where the index's modification time does not change (coarse timestamps: NFS, FAT, a busy ext4 tick)."""
    import os

    folder, uploads = studies
    first, second = KneelDatastore(str(folder)), KneelDatastore(str(folder))
    index = folder / "datastore_v2.json"
    first.save_label("img_0", uploads[0], "final", {})
    mtime = index.stat().st_mtime_ns
    second.save_label("img_1", uploads[1], "final", {})  # re-reads the index first: img_0's label is kept
    os.utime(index, ns=(mtime, mtime))  # the same timestamp as the first one's own write
    assert _index_finals(folder) == {"img_0": 1, "img_1": 1}
    first.save_label("img_0", uploads[2], "final", {})  # must re-read: img_1's label is kept
    assert _index_finals(folder) == {"img_0": 2, "img_1": 1}
    assert sorted(first.get_labeled_images()) == ["img_0", "img_1"]
