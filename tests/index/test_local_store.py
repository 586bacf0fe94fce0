"""LocalStore: what was acknowledged is there after a reopen or a kill -9, and damage is never loaded silently.

Every reopened index is compared with an in-memory index that saw the same
operations: same items, codes, metadata and row (tie) order.
"""
from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from index import CorruptStore, Fingerprint, FingerprintMismatch, HammingIndex, LogGap, StoreError, StoreLocked
from index.stores import Batch, Op, Snapshot
from index.stores.local import LocalStore
from tests.conftest import REPO_ROOT
from tests.index.conftest import assert_same_index, code_of, codes_of

BITS = 64


def open_index(path: Path, **options) -> HammingIndex:
    return HammingIndex(BITS, "m", store=LocalStore(path, **options))


class Twins:
    """Applies every operation to the stored index and to an in-memory reference."""

    def __init__(self, index: HammingIndex) -> None:
        self.index = index
        self.reference = HammingIndex(BITS, "m")

    def upsert(self, ids: list[str], salt: str = "") -> None:
        metadata = [{"id": i, "salt": salt} for i in ids]
        for target in (self.index, self.reference):
            target.upsert(ids, codes_of([i + salt for i in ids]), metadata)

    def remove(self, ids: list[str]) -> None:
        for target in (self.index, self.reference):
            target.remove(ids)

    def reset(self) -> None:
        for target in (self.index, self.reference):
            target.reset()


def ids(lo: int, hi: int) -> list[str]:
    return [f"img-{i:05d}" for i in range(lo, hi)]


def test_round_trip_keeps_items_metadata_and_order(tmp_path: Path) -> None:
    twins = Twins(open_index(tmp_path / "idx"))
    twins.upsert(ids(0, 300))
    twins.upsert(ids(100, 150), salt="v2")  # rewritten items keep their place
    twins.remove(ids(50, 80) + ["never-added"])
    twins.upsert(ids(60, 70), salt="back")  # removed then re-added: now at the end
    twins.index.close()

    reopened = open_index(tmp_path / "idx")
    assert_same_index(reopened, twins.reference)
    twins.index = reopened
    twins.reset()
    twins.upsert(ids(1000, 1010))
    assert reopened.store.ping()
    reopened.close()
    assert not reopened.store.ping()
    assert_same_index(open_index(tmp_path / "idx"), twins.reference)


def test_snapshot_plus_log_reopens_to_the_same_index(tmp_path: Path) -> None:
    twins = Twins(open_index(tmp_path / "idx", snapshot_after_bytes=4096))
    for start in range(0, 2000, 50):
        twins.upsert(ids(start, start + 50))
        twins.remove(ids(start, start + 3))
    twins.index.close()
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["snapshot"]["seq"] > 0
    assert (tmp_path / "idx" / manifest["log"]).stat().st_size > 0  # some entries are only in the log
    data_files = sorted(p.name for p in (tmp_path / "idx").glob("*.bin"))
    assert data_files == sorted([manifest["log"], manifest["snapshot"]["file"]])

    reopened = open_index(tmp_path / "idx")  # a larger threshold: no new snapshot needed to reopen
    assert_same_index(reopened, twins.reference)
    twins.index = reopened
    twins.upsert(ids(5000, 5100))
    reopened.close()
    assert_same_index(open_index(tmp_path / "idx", snapshot_after_bytes=1), twins.reference)


WRITER = """
import sys
from pathlib import Path
from index import HammingIndex
from index.stores.local import LocalStore
from tests.index.conftest import codes_of

path, start = Path(sys.argv[1]), int(sys.argv[2])
index = HammingIndex(64, "m", store=LocalStore(path, snapshot_after_bytes=8192))
if start == 0:  # enough items that a snapshot takes a while to write
    base = [f"base-{i}" for i in range(20_000)]
    index.upsert(base, codes_of(base))
print("ready", flush=True)
i = start
while True:
    batch = [f"item-{i}-{j}" for j in range(3)]
    index.upsert(batch, codes_of(batch), [{"i": i}] * 3)
    print(i, flush=True)
    i += 1
"""


def run_writer_until_killed(path: Path, start: int, rng: random.Random, during_snapshot: bool) -> list[int]:
    """Start the writer, SIGKILL it (at a random moment, or as a new snapshot file appears); acknowledged batches."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(start)], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "ready\n"
        if during_snapshot:
            current = set(path.glob("snapshot-*.bin"))
            deadline = time.monotonic() + 5
            while not (set(path.glob("snapshot-*.bin")) - current) and time.monotonic() < deadline:
                pass
        else:
            time.sleep(rng.uniform(0.05, 0.4))
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    out = writer.stdout.read()
    writer.stdout.close()
    return [int(line) for line in out.split("\n")[:-1]]  # a line without its newline was cut by the kill


def test_kill_9_mid_write_loses_no_acknowledged_write(tmp_path: Path) -> None:
    path, rng = tmp_path / "idx", random.Random(1)
    acknowledged: list[int] = []
    for run in range(6):
        acknowledged += run_writer_until_killed(path, (acknowledged or [-1])[-1] + 1, rng, during_snapshot=run % 2 == 1)
        index = open_index(path)  # must open whatever the moment of the kill
        for i in acknowledged:
            item_id = f"item-{i}-1"
            assert index.get(item_id).code == code_of(item_id).tobytes()
            assert index.get(item_id).metadata == {"i": i}
        assert len(index) >= 20_000 + 3 * len(acknowledged)
        index.close()
    assert len(acknowledged) > 100


def test_torn_last_record_is_truncated_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    twins = Twins(open_index(tmp_path / "idx"))
    log_file = tmp_path / "idx" / "log-0.bin"
    twins.upsert(ids(0, 10))
    twins.upsert(ids(10, 20))
    intact = log_file.stat().st_size
    twins.index.upsert(ids(20, 30), codes_of(ids(20, 30)))  # the write the crash will tear
    whole = log_file.stat().st_size
    twins.index.close()

    os.truncate(log_file, (intact + whole) // 2)
    with caplog.at_level(logging.WARNING, logger="index.stores.local"):
        reopened = open_index(tmp_path / "idx")
    assert "torn record" in caplog.text
    assert log_file.stat().st_size == intact
    assert_same_index(reopened, twins.reference)

    twins.index = reopened
    twins.upsert(ids(40, 50))
    reopened.close()
    with open(log_file, "ab") as f:
        f.write(b"\0\0\0 half a header")  # or zeroes and junk where the file grew
    assert_same_index(open_index(tmp_path / "idx"), twins.reference)


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def current(path: Path, entry: str) -> Path:
    manifest = json.loads((path / "manifest.json").read_text())
    return path / (manifest["log"] if entry == "log" else manifest["snapshot"]["file"])


def edit_manifest(path: Path, change: Callable[[dict], None]) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


DAMAGE = {
    "snapshot byte flipped": (lambda p: flip_byte(current(p, "snapshot"), 100), "snapshot-1.bin", "CRC32"),
    "snapshot cut short": (lambda p: os.truncate(current(p, "snapshot"), 64), "snapshot-1.bin", "bytes"),
    "snapshot deleted": (lambda p: current(p, "snapshot").unlink(), "snapshot-1.bin", "missing"),
    "log byte flipped mid-log": (lambda p: flip_byte(current(p, "log"), 30), "log-1.bin", "intact records follow"),
    "log deleted": (lambda p: current(p, "log").unlink(), "log-1.bin", "missing"),
    "manifest truncated": (lambda p: os.truncate(p / "manifest.json", 40), "manifest.json", "not valid JSON"),
    "manifest deleted": (lambda p: (p / "manifest.json").unlink(), "manifest.json", "missing"),
    "manifest from a newer format": (lambda p: edit_manifest(p, lambda m: m.update(format=99)), "manifest.json",
                                     "format version 99"),
    "snapshot size misdeclared": (lambda p: edit_manifest(p, lambda m: m["snapshot"]["sections"]["codes"].update(
        size=8)), "snapshot-1.bin", "codes"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_files_are_corrupt_store_naming_the_file(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "idx"
    with open_index(path, snapshot_after_bytes=1) as index:  # a snapshot after the first write
        index.upsert(ids(0, 100), codes_of(ids(0, 100)))
    with open_index(path) as index:  # then three records in the log
        for start in (100, 110, 120):
            index.upsert(ids(start, start + 10), codes_of(ids(start, start + 10)))
    do, names, says = DAMAGE[damage]
    do(path)
    with pytest.raises(CorruptStore, match=says) as caught:
        open_index(path)
    assert names in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("moment", ["before the manifest switch", "after the manifest switch"])
def test_files_left_by_an_interrupted_snapshot_are_ignored_and_removed(tmp_path: Path, moment: str) -> None:
    path = tmp_path / "idx"
    twins = Twins(open_index(path, snapshot_after_bytes=1))
    twins.upsert(ids(0, 100))
    previous = {p.name: p.read_bytes() for p in path.glob("*-1.bin")}
    twins.upsert(ids(100, 200))  # generation 2 replaces generation 1
    twins.index.close()
    if moment == "before the manifest switch":  # the next generation half-written
        (path / "snapshot-3.bin").write_bytes(b"partial")
        (path / "log-3.bin").write_bytes(b"")
        (path / "manifest.json.tmp").write_text("{")
    else:  # the previous generation not deleted yet
        for name, data in previous.items():
            (path / name).write_bytes(data)

    assert_same_index(open_index(path), twins.reference)
    assert sorted(p.name for p in path.iterdir()) == ["LOCK", "log-2.bin", "manifest.json", "snapshot-2.bin"]


def test_a_second_opener_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    index = open_index(path)
    with pytest.raises(StoreLocked, match=str(path)):
        open_index(path)
    other = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; from index.stores.local import LocalStore; "
                               "LocalStore(Path(sys.argv[1])).open(None)", str(path)],
        cwd=REPO_ROOT, capture_output=True, text=True)
    assert "StoreLocked" in other.stderr and str(path) in other.stderr
    index.close()
    open_index(path).close()  # the lock went with the first store


def test_another_models_fingerprint_is_refused_with_advice(tmp_path: Path) -> None:
    open_index(tmp_path / "idx").close()
    with pytest.raises(FingerprintMismatch) as caught:
        HammingIndex(128, "resnet-v2", store=LocalStore(tmp_path / "idx"))
    message = str(caught.value)
    assert "64-bit codes from model 'm'" in message and "128-bit codes from model 'resnet-v2'" in message
    assert "new directory" in message
    open_index(tmp_path / "idx").close()  # the refused opener let go of the lock


def test_a_new_directory_needs_a_fingerprint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs its bits and model id"):
        HammingIndex(store=LocalStore(tmp_path / "nothing"))
    assert not (tmp_path / "nothing").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="needs its bits and model id"):
        HammingIndex(store=LocalStore(tmp_path / "empty"))
    open_index(tmp_path / "empty").close()
    assert HammingIndex(store=LocalStore(tmp_path / "empty")).fingerprint.model_id == "m"


def test_unusable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreError, match=str(tmp_path / "file")):
        open_index(tmp_path / "file" / "idx")


FILLER = """
import resource, signal, sys
from pathlib import Path
from index import HammingIndex, StoreError
from index.stores.local import LocalStore
from tests.index.conftest import codes_of

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
index = HammingIndex(64, "m", store=LocalStore(Path(sys.argv[1])))
refusals = 0
for i in range(10_000):
    batch = [f"item-{i}-{j}" for j in range(20)]
    try:
        index.upsert(batch, codes_of(batch))
    except StoreError as exc:
        print("refused:", exc, flush=True)
        refusals += 1
        if refusals == 2:  # the second append after a refusal must be refused cleanly too
            break
        continue
    print(i, flush=True)
"""


def test_a_full_disk_refuses_writes_and_keeps_the_log_intact(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    filler = subprocess.run([sys.executable, "-c", FILLER, str(path)], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60)
    lines = filler.stdout.splitlines()
    refused = [line for line in lines if line.startswith("refused:")]
    acknowledged = [int(line) for line in lines if not line.startswith("refused:")]
    assert refused and str(path / "log-0.bin") in refused[0] and "File too large" in refused[0]
    assert acknowledged == list(range(len(acknowledged)))  # nothing acknowledged after the first refusal
    with open_index(path) as index:  # the failed appends were cut off the log: it opens without a warning
        assert len(index) == 20 * len(acknowledged)
        assert np.array_equal(index.search(codes_of(["item-0-0"]), 1).ids, [["item-0-0"]])


def snapshot_of(seq: int, names: list[str]) -> Snapshot:
    raw_ids = [n.encode() for n in names]
    return Snapshot(seq, codes_of(names).view(np.uint64), np.frombuffer(b"".join(raw_ids), np.uint8),
                    np.array([len(i) for i in raw_ids], np.int32), np.frombuffer(b"{}" * len(names), np.uint8),
                    np.full(len(names), 2, np.int32))


def test_a_snapshot_behind_the_log_keeps_the_later_entries(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "idx")
    store.open(Fingerprint(BITS, "m"))
    for n in range(1, 5):
        store.append(Batch(Op.UPSERT, [f"id{n}"], codes_of([f"id{n}"]).view(np.uint64), [b"{}"]))
    store.write_snapshot(snapshot_of(2, ["id1", "id2"]))
    store.append(Batch(Op.REMOVE, ["id1"]))
    assert [seq for seq, _ in store.read_log(after=2)] == [3, 4, 5]
    store.read_log(after=5)
    with pytest.raises(LogGap):  # what the index has passed is not kept; it would reopen the store
        store.read_log(after=2)
    store.close()

    store = LocalStore(tmp_path / "idx")
    _, snapshot = store.open(None)
    assert snapshot.seq == 2 and snapshot.id_blob.tobytes() == b"id1id2"
    assert [(seq, batch.op, batch.ids) for seq, batch in store.read_log(after=2)] == \
        [(3, Op.UPSERT, ["id3"]), (4, Op.UPSERT, ["id4"]), (5, Op.REMOVE, ["id1"])]
    store.close()

    edit_manifest(tmp_path / "idx", lambda m: m["snapshot"].update(seq=3))  # as if the log still held seq 3
    store = LocalStore(tmp_path / "idx")
    store.open(None)
    assert [seq for seq, _ in store.read_log(after=3)] == [4, 5]  # entries the snapshot holds are skipped
    store.close()
