"""The embedded store: one directory holding a checksummed snapshot and an fsync'd append-only log.

Files in the directory:

    manifest.json      format version, fingerprint, generation, the log's file name and the
                       snapshot's description (file, seq, count, section sizes and CRC32s)
    snapshot-<g>.bin   the snapshot's sections (codes, id_lens, meta_lens, id_blob, meta_blob),
                       raw little-endian, back to back, each padded to 8 bytes
    log-<g>.bin        records [b"DHL1"][u32 payload length][u64 seq][u32 crc32][Batch.encode()],
                       the CRC covering length, seq and payload
    LOCK               flock'd by the one store that has the directory open (holds its pid)

Why a crash never loses an acknowledged write nor leaves a directory that will not open:

* append writes one record and fsyncs before it returns.  A crash mid-append leaves at most
  the last record torn; open finds it (short, bad magic or bad CRC, with no valid record after
  it), logs a warning and truncates it.  A damaged record *followed* by valid ones is not a
  torn write, so it is reported as corruption instead of being cut away with what follows.
* write_snapshot writes and fsyncs the next generation's snapshot and log beside the current
  ones, then swaps manifest.json atomically (temp file, fsync, rename, fsync of the
  directory), and only then deletes the old generation.  Before the rename the old manifest
  names old, intact files; after it the new one names new, fsync'd files.  Whatever generation
  the manifest does not name is a leftover of such an interruption and is deleted on open.
* A new directory gets its empty log before its manifest; a directory without a manifest
  whose logs are all empty is therefore an interrupted creation and is created afresh.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from index.errors import CorruptStore, FingerprintMismatch, LogGap, StoreError, StoreLocked
from index.stores import _layout
from index.stores.base import Batch, Fingerprint, Snapshot, Store

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LOCK = "LOCK"

_RECORD = struct.Struct("<4sIQI")  # magic, payload length, seq, crc32
_MAGIC = b"DHL1"
_DATA_FILE = re.compile(r"(snapshot|log)-(\d+)\.bin")
_ALIGN = 8


class LocalStore(Store):
    """A directory on a local disk, opened for writing by one store at a time.

    `fsync=False` keeps every write safe from a killed process but not from a
    power cut (benchmarks, scratch indexes).  A snapshot is due when the log
    reaches `snapshot_after_bytes`, or earlier, once it reaches 1/64 of that
    (1 MiB by default) and outgrows the snapshot itself: replaying a log costs
    more than loading a snapshot of the same size.  A huge
    `snapshot_after_bytes` therefore leaves snapshots to the caller.
    """

    def __init__(self, path: Path, *, fsync: bool = True, snapshot_after_bytes: int = 64 << 20) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.snapshot_after_bytes = snapshot_after_bytes
        self._mutex = threading.Lock()
        self._lock_fd: int | None = None
        self._log_fd: int | None = None
        self._manifest: dict[str, Any] = {}
        self._seq = 0  # last seq in the log (or of the snapshot when the log is empty)
        self._read_through = 0  # entries up to here are no longer kept for read_log
        self._unread: list[tuple[int, Batch]] = []
        self._log_bytes = 0
        self._snapshot_bytes = 0
        self._broken: str | None = None  # why appends are refused until the store is reopened

    @property
    def location(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------- contract

    def open(self, fingerprint: Fingerprint | None) -> tuple[Fingerprint, Snapshot | None]:
        with self._mutex:
            try:
                with self._os_errors("opening the index"):
                    return self._open(fingerprint)
            except BaseException:
                self._release()
                raise

    def append(self, batch: Batch) -> int:
        payload = batch.encode()
        with self._mutex:
            self._check_writable()
            seq = self._seq + 1
            record = _record(seq, payload)
            try:
                _write_all(self._log_fd, record)
                if self.fsync:
                    os.fdatasync(self._log_fd)
            except OSError as exc:
                self._forget_partial_append()
                raise StoreError(f"{self._log_path()}: appending to the log failed: {exc}") from exc
            self._seq = seq
            self._log_bytes += len(record)
            self._unread.append((seq, batch))
            return seq

    def read_log(self, after: int, timeout: float = 0.0) -> list[tuple[int, Batch]]:
        # The only reader is the index that wrote the entries: keep what it has not applied yet.
        with self._mutex:
            if after < self._read_through:
                raise LogGap(f"{self.path}: entries after {after} were already read; reopen to read them again")
            self._unread = [entry for entry in self._unread if entry[0] > after]
            self._read_through = max(after, self._read_through)
            return list(self._unread)

    def should_snapshot(self) -> bool:
        earliest = max(self.snapshot_after_bytes // 64, self._snapshot_bytes)
        return self._log_bytes >= min(self.snapshot_after_bytes, earliest)

    def write_snapshot(self, snapshot: Snapshot) -> None:
        with self._mutex:
            self._check_writable()
            if snapshot.seq > self._seq:
                raise ValueError(f"snapshot at seq {snapshot.seq} is ahead of the log, which ends at {self._seq}")
            if snapshot.seq <= self._snapshot_seq():
                return  # the directory already holds this state or a later one
            with self._os_errors("writing a snapshot"):
                self._write_snapshot(snapshot)

    def ping(self) -> bool:
        """Open, and the directory is still there (not unmounted or deleted under the service)."""
        return self._log_fd is not None and (self.path / MANIFEST).exists()

    def close(self) -> None:
        with self._mutex:
            self._release()

    # -------------------------------------------------------------- opening

    def _open(self, fingerprint: Fingerprint | None) -> tuple[Fingerprint, Snapshot | None]:
        if self._lock_fd is None:
            if fingerprint is None and not (self.path / MANIFEST).exists():
                self._refuse_without_manifest()
            self._lock()
        self._close_log()
        manifest = self._read_manifest()
        if manifest is None:
            if fingerprint is None or self._data_files():
                self._refuse_without_manifest()
            manifest = self._create(fingerprint)
        stored = self._fingerprint(manifest)
        if fingerprint is not None and fingerprint != stored:
            raise FingerprintMismatch(
                f"{self.path} holds an index of {stored.bits}-bit codes from model {stored.model_id!r}, "
                f"but {fingerprint.bits}-bit codes from model {fingerprint.model_id!r} were asked for; "
                f"index into a new directory, or delete {self.path} to re-index here")
        snapshot = self._load_snapshot(manifest)
        snapshot_seq = snapshot.seq if snapshot is not None else 0
        self._unread, self._log_bytes = self._load_log(manifest, snapshot_seq)
        self._manifest = manifest
        self._seq = self._unread[-1][0] if self._unread else snapshot_seq
        self._read_through = snapshot_seq
        self._remove_leftovers()
        self._log_fd = os.open(self._log_path(), os.O_WRONLY | os.O_APPEND)
        self._broken = None
        return stored, snapshot

    def _refuse_without_manifest(self) -> None:
        found = self._data_files()
        if found:
            raise CorruptStore(f"{self.path / MANIFEST} is missing, but the directory holds index data "
                               f"({', '.join(found)}); restore the manifest from a backup or delete {self.path}")
        raise ValueError(f"{self.path} holds no index yet: a new index needs its bits and model id")

    def _data_files(self) -> list[str]:
        """Snapshot files and non-empty logs: what a directory that never got its manifest cannot hold."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if _DATA_FILE.fullmatch(p.name)
                      and (p.name.startswith("snapshot") or p.stat().st_size > 0))

    def _lock(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreLocked(f"{self.path} is already open (lock {self.path / LOCK} held by process {owner}); "
                                  "one store at a time may write an index directory") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _create(self, fingerprint: Fingerprint) -> dict[str, Any]:
        manifest = {"format": _layout.FORMAT_VERSION, "fingerprint": fingerprint.to_dict(), "generation": 0,
                    "log": "log-0.bin", "snapshot": None}
        self._write_file(self.path / manifest["log"], [])
        self._sync_directory()
        self._write_manifest(manifest)
        self._sync_directory()
        return manifest

    def _read_manifest(self) -> dict[str, Any] | None:
        path = self.path / MANIFEST
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            manifest = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptStore(f"{path} is not valid JSON ({exc})") from None
        if not isinstance(manifest, dict):
            raise CorruptStore(f"{path} holds {type(manifest).__name__}, not a JSON object")
        if manifest.get("format") != _layout.FORMAT_VERSION:
            raise CorruptStore(f"{path} has format version {manifest.get('format')!r}; "
                               f"this build reads version {_layout.FORMAT_VERSION}")
        snapshot = manifest.get("snapshot")
        names = [manifest.get("log")] + ([snapshot.get("file")] if isinstance(snapshot, dict) else [])
        if not (isinstance(manifest.get("generation"), int) and (snapshot is None or isinstance(snapshot, dict))
                and all(isinstance(n, str) and _DATA_FILE.fullmatch(n) for n in names)):
            raise CorruptStore(f"{path} lacks a valid generation, log or snapshot entry")
        return manifest

    def _fingerprint(self, manifest: dict[str, Any]) -> Fingerprint:
        try:
            return Fingerprint.from_dict(manifest.get("fingerprint"))
        except CorruptStore as exc:
            raise CorruptStore(f"{self.path / MANIFEST}: {exc}") from None

    def _load_snapshot(self, manifest: dict[str, Any]) -> Snapshot | None:
        description = manifest["snapshot"]
        if description is None:
            self._snapshot_bytes = 0
            return None
        path = self.path / description["file"]
        sizes = _layout.section_sizes(description, str(path))
        offsets = _offsets(sizes)
        if not path.exists():
            raise CorruptStore(f"{path} is missing, but {MANIFEST} names it as the current snapshot")
        size = path.stat().st_size
        if size != offsets["end"]:
            raise CorruptStore(f"{path} is {size} bytes, but its description in {MANIFEST} needs {offsets['end']}")
        raw = np.fromfile(path, dtype=np.uint8)
        data = {name: raw[offsets[name]: offsets[name] + sizes[name]] for name in _layout.SECTIONS}
        self._snapshot_bytes = size
        return _layout.assemble(description, data, str(path))

    def _load_log(self, manifest: dict[str, Any], snapshot_seq: int) -> tuple[list[tuple[int, Batch]], int]:
        path = self.path / manifest["log"]
        if not path.exists():
            raise CorruptStore(f"{path} is missing, but {MANIFEST} names it as the current log")
        data = path.read_bytes()
        entries, end = _scan_log(data, snapshot_seq, path)
        if end < len(data):
            log.warning("%s: dropping a torn record of %d bytes at its end (a write interrupted by a crash, "
                        "never acknowledged)", path, len(data) - end)
            os.truncate(path, end)
            if self.fsync:
                self._fsync_path(path)
        return entries, end

    def _remove_leftovers(self) -> None:
        """Delete the generation an interrupted write_snapshot left behind (before or after its switch)."""
        current = {self._manifest["log"]}
        if self._manifest["snapshot"] is not None:
            current.add(self._manifest["snapshot"]["file"])
        for path in self.path.iterdir():
            if (_DATA_FILE.fullmatch(path.name) and path.name not in current) or path.name == MANIFEST + ".tmp":
                log.info("%s: removing %s, left by an interrupted snapshot", self.path, path.name)
                path.unlink()

    # ------------------------------------------------------------- writing

    def _write_snapshot(self, snapshot: Snapshot) -> None:
        generation = self._manifest["generation"] + 1
        snapshot_path = self.path / f"snapshot-{generation}.bin"
        log_path = self.path / f"log-{generation}.bin"
        data = _layout.sections(snapshot)
        description = {"file": snapshot_path.name, **_layout.describe(snapshot, data)}
        padding = {name: b"\0" * (-len(data[name]) % _ALIGN) for name in _layout.SECTIONS}
        manifest = {**self._manifest, "generation": generation, "log": log_path.name, "snapshot": description}
        try:
            self._write_file(snapshot_path, [part for name in _layout.SECTIONS for part in (data[name], padding[name])])
            tail = self._records_after(snapshot.seq)
            self._write_file(log_path, [tail])
            self._sync_directory()
            self._write_manifest(manifest)  # the switch; the old manifest stands if this fails
        except BaseException:
            for path in (snapshot_path, log_path, self.path / (MANIFEST + ".tmp")):
                path.unlink(missing_ok=True)
            raise
        old = [self._log_path()] + ([self.path / self._manifest["snapshot"]["file"]]
                                    if self._manifest["snapshot"] is not None else [])
        self._close_log()
        self._manifest = manifest
        self._log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
        self._log_bytes = len(tail)
        self._snapshot_bytes = snapshot_path.stat().st_size
        # Until the rename is durable a power cut may bring the old manifest back: keep its files till then.
        self._sync_directory()
        for path in old:
            try:
                path.unlink()
            except OSError as exc:  # harmless: the next open removes it
                log.warning("%s: could not remove the previous generation's %s: %s", self.path, path.name, exc)

    def _records_after(self, seq: int) -> bytes:
        """The log's records after `seq`, as stored: they move to the next generation's log."""
        if seq >= self._seq:
            return b""
        data = self._log_path().read_bytes()
        pos = 0
        while _RECORD.unpack_from(data, pos)[2] <= seq:
            pos += _RECORD.size + _RECORD.unpack_from(data, pos)[1]
        return data[pos:]

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        """Replace manifest.json in one rename, so it names the old state or the new one, never a mix."""
        temporary = self.path / (MANIFEST + ".tmp")
        self._write_file(temporary, [json.dumps(manifest, indent=2).encode()])
        os.replace(temporary, self.path / MANIFEST)

    def _write_file(self, path: Path, parts: list[Any]) -> None:
        with open(path, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())

    def _forget_partial_append(self) -> None:
        """Cut a failed append's bytes off the log, or refuse appends until a reopen does."""
        try:
            os.ftruncate(self._log_fd, self._log_bytes)
            if self.fsync:
                os.fdatasync(self._log_fd)
        except OSError as exc:
            self._broken = f"a failed append could not be undone ({exc}); reopen the store"

    # ---------------------------------------------------------------- small

    def _snapshot_seq(self) -> int:
        return self._manifest["snapshot"]["seq"] if self._manifest["snapshot"] is not None else 0

    def _log_path(self) -> Path:
        return self.path / self._manifest["log"]

    def _check_writable(self) -> None:
        if self._log_fd is None:
            raise StoreError(f"{self.path} is not open")
        if self._broken:
            raise StoreError(f"{self.path}: {self._broken}")

    def _sync_directory(self) -> None:
        if self.fsync:
            self._fsync_path(self.path)

    @staticmethod
    def _fsync_path(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextmanager
    def _os_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise StoreError(f"{self.path}: {action} failed: {exc}") from exc

    def _close_log(self) -> None:
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None

    def _release(self) -> None:
        self._close_log()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None


def _record(seq: int, payload: bytes) -> bytes:
    return _RECORD.pack(_MAGIC, len(payload), seq, _record_crc(len(payload), seq, payload)) + payload


def _record_crc(length: int, seq: int, payload: Any) -> int:
    return _layout.crc32(payload, _layout.crc32(struct.pack("<IQ", length, seq)))


def _parse_record(data: bytes, pos: int) -> tuple[int, memoryview, int] | str:
    """(seq, payload, end) of the record at `pos`, or why there is no intact record there."""
    if len(data) - pos < _RECORD.size:
        return "header cut short"
    magic, length, seq, crc = _RECORD.unpack_from(data, pos)
    if magic != _MAGIC:
        return "bad magic"
    end = pos + _RECORD.size + length
    if end > len(data):
        return "payload cut short"
    payload = memoryview(data)[pos + _RECORD.size: end]
    if _record_crc(length, seq, payload) != crc:
        return "CRC mismatch"
    return seq, payload, end


def _scan_log(data: bytes, snapshot_seq: int, path: Path) -> tuple[list[tuple[int, Batch]], int]:
    """Entries after the snapshot, and where the intact records end (before a torn last one)."""
    entries: list[tuple[int, Batch]] = []
    expected: int | None = None
    pos = 0
    while pos < len(data):
        record = _parse_record(data, pos)
        if isinstance(record, str):
            if _intact_record_after(data, pos + 1):
                raise CorruptStore(f"{path}: the record at byte {pos} is damaged ({record}), "
                                   "but intact records follow it")
            break
        seq, payload, end = record
        if expected is None and seq > snapshot_seq + 1:
            raise CorruptStore(f"{path} starts at seq {seq}, but the snapshot ends at seq {snapshot_seq}")
        if expected is not None and seq != expected:
            raise CorruptStore(f"{path}: the record at byte {pos} has seq {seq}, expected {expected}")
        if seq > snapshot_seq:
            try:
                entries.append((seq, Batch.decode(bytes(payload))))
            except CorruptStore as exc:
                raise CorruptStore(f"{path}: record {seq} at byte {pos}: {exc}") from None
        expected, pos = seq + 1, end
    return entries, pos


def _intact_record_after(data: bytes, start: int) -> bool:
    pos = data.find(_MAGIC, start)
    while pos >= 0:
        if not isinstance(_parse_record(data, pos), str):
            return True
        pos = data.find(_MAGIC, pos + 1)
    return False


def _offsets(sizes: dict[str, int]) -> dict[str, int]:
    """Where each section starts in a snapshot file (8-byte aligned, so codes load as aligned words)."""
    offsets, pos = {}, 0
    for name in _layout.SECTIONS:
        offsets[name] = pos
        pos += sizes[name] + (-sizes[name] % _ALIGN)
    offsets["end"] = pos
    return offsets


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
