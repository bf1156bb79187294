"""Append-only JSONL store with atomic writes and resume.

Each record is one JSON line written with a single `write` on a file opened in append mode and
flushed + fsynced before `append` returns. A process killed mid-write can leave at most one
partial last line; `open` truncates it away (that record was never acknowledged, so it is simply
recomputed). Records carry a `key`; a stage asks `done()` for the keys already present and skips
them, so a resumed run has no duplicate and loses nothing it had written.

Derived artifacts (summaries, tables) are written whole with `atomic_write_text`: write a temp
file in the same folder, fsync, `os.replace`.

One writer per run directory: every stage holds `run_lock(run_dir)` (an flock on RUN/.heal.lock,
released by the kernel when the process dies, kill -9 included) and a second process is refused
with a message naming the holder. Readers go through `read_store`, which yields each key once, so
a store written before the lock existed never counts a record twice.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


class StoreError(ValueError):
    pass


class RunLocked(RuntimeError):
    """Another process is writing the same run directory."""


class DiskFull(OSError):
    """The disk filled up while writing; everything acknowledged before is on disk."""


def _disk_error(e: OSError, path) -> OSError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(e.errno, f"no space left on the device writing {path}: free some space and run the "
                                 f"same command again (every record written before is kept)")
    return e


_held: dict[str, list] = {}  # run directory (resolved) -> [open lock file, depth]: reentrant per process


@contextmanager
def run_lock(run_dir: str | os.PathLike, what: str = "heal"):
    """Hold the run directory's exclusive writer lock for the block (reentrant in one process).

    flock, not a pid file: the kernel drops the lock when its holder dies, so a killed run never
    leaves a stale lock behind. The holder writes its pid and command into the file so the refusal
    can say who holds it."""
    run_dir = Path(run_dir)
    key = str(run_dir.resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    path = run_dir / ".heal.lock"
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = ""
        for _ in range(20):  # the holder writes its pid just after it takes the lock: give it a moment
            f.seek(0)
            holder = f.read().strip()
            if holder:
                break
            time.sleep(0.05)
        holder = holder or "another process"
        f.close()
        raise RunLocked(f"{run_dir} is being written by {holder}; wait for it to finish (or stop it) "
                        f"before running `{what}` on the same output_dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} ({' '.join(['heal', *sys.argv[1:]]) if sys.argv else what})\n")
    f.flush()
    _held[key] = [f, 1]
    try:
        yield
    finally:
        _held.pop(key)
        f.seek(0)
        f.truncate()
        f.close()  # closing the descriptor releases the flock


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _disk_error(e, path) from None
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _disk_error(e, path) from None
        raise


def atomic_write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def pack_f16(values) -> dict | None:
    """Per-token floats (entropy, log-probs) as float16 bytes in base64: 2 bytes a token (2.7 in the
    file) instead of ~9 for a JSON float, at a relative error under 1e-3, far below any effect GEAR or
    PURE measures. Readers of the store unpack it (`{"f16": ...}` becomes the list again)."""
    if values is None:
        return None
    import numpy as np

    return {"f16": base64.b64encode(np.asarray(values, dtype=np.float16).tobytes()).decode("ascii")}


def _unpack(rec: dict) -> dict:
    for key, value in rec.items():
        if isinstance(value, dict) and len(value) == 1 and "f16" in value:
            import numpy as np

            rec[key] = np.frombuffer(base64.b64decode(value["f16"]), dtype=np.float16).astype(float).tolist()
    return rec


def _parsed(path, unpack: bool = True, store: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number, object) of a JSONL file; bad JSON, bad UTF-8 or a non-object is a StoreError
    naming file:line. Lines are decoded one by one so the error can say which line. `unpack`:
    packed per-token floats become lists (off to copy records as they are stored). `store`: an
    unfinished last line (no newline, not JSON) is a record being written, or cut by a kill, which
    the store's writer drops when it reopens: skipped, so a store can be read while it grows."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                rec = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                if store and not raw.endswith(b"\n"):
                    return  # the unfinished last line
                what = (f"not valid JSON ({e.msg} at column {e.colno})" if isinstance(e, json.JSONDecodeError)
                        else "not valid UTF-8")
                raise StoreError(f"{path}:{lineno}: {what}") from None
            if not isinstance(rec, dict):
                raise StoreError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            yield lineno, _unpack(rec) if unpack else rec


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield records; a malformed line raises StoreError naming the file and line."""
    for _, rec in _parsed(path):
        yield rec


def _lines(path, unpack: bool = True) -> Iterator[tuple[int, dict]]:
    """(line number, record) of a store; a record without a string `key` is a StoreError naming its line."""
    for lineno, rec in _parsed(path, unpack, store=True):
        if not isinstance(rec.get("key"), str):
            raise StoreError(f"{path}:{lineno}: a store record needs a string 'key'")
        yield lineno, rec


def read_numbered(path: str | os.PathLike, keyed: bool = True, unpack: bool = True) -> Iterator[tuple[int, dict]]:
    """(line number, record) of a JSONL file, for readers that report file:line. `keyed`: a store,
    each key once (the first written wins: the later copies are what a second writer duplicated
    before runs were locked). Malformed lines raise StoreError with file:line."""
    if not keyed:
        yield from _parsed(path, unpack)
        return
    seen: set[str] = set()
    for lineno, rec in _lines(path, unpack):
        if rec["key"] not in seen:
            seen.add(rec["key"])
            yield lineno, rec


def read_store(path: str | os.PathLike, unpack: bool = True) -> Iterator[dict]:
    """A store's records, each key once (see read_numbered)."""
    for _, rec in read_numbered(path, True, unpack):
        yield rec


class JsonlStore:
    """An append-only JSONL file of records that each carry a unique `key`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._keys: set[str] = set()
        if self.path.exists():
            for _, rec in _lines(self.path, unpack=False):
                self._keys.add(rec["key"])

    def _repair_tail(self) -> None:
        """Drop a partial last line left by a process killed mid-write."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return
            # Find the last newline; everything after it is an unfinished record.
            pos, chunk = size, 1 << 16
            while pos > 0:
                start = max(0, pos - chunk)
                f.seek(start)
                buf = f.read(pos - start)
                i = buf.rfind(b"\n")
                if i >= 0:
                    f.truncate(start + i + 1)
                    return
                pos = start
            f.truncate(0)

    def done(self) -> set[str]:
        return set(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def append(self, records: list[dict[str, Any]]) -> int:
        """Append records whose key is new; returns how many were written."""
        fresh, seen = [], set()
        for r in records:
            if "key" not in r:
                raise StoreError("every store record needs a 'key'")
            if r["key"] not in self._keys and r["key"] not in seen:
                fresh.append(r)
                seen.add(r["key"])
        if not fresh:
            return 0
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fresh).encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as e:
            # A full disk mid-batch: cut the file back to its last acknowledged record, so the
            # store holds whole lines only and a rerun redoes just this batch.
            os.ftruncate(fd, size)
            raise _disk_error(e, self.path) from None
        finally:
            os.close(fd)
        self._keys.update(r["key"] for r in fresh)
        return len(fresh)

    def __iter__(self) -> Iterator[dict]:
        if self.path.exists():
            yield from read_store(self.path)
