"""Append-only JSONL store with atomic writes and resume.

Each record is one JSON line written with a single `write` on a file opened in append mode and
flushed + fsynced before `append` returns. A process killed mid-write can leave at most one
partial last line; `open` truncates it away (that record was never acknowledged, so it is simply
recomputed). Records carry a `key`; a stage asks `done()` for the keys already present and skips
them, so a resumed run has no duplicate and loses nothing it had written.

Derived artifacts (summaries, tables) are written whole with `atomic_write_text`: write a temp
file in the same folder, fsync, `os.replace`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


class StoreError(ValueError):
    pass


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield records; a malformed line raises StoreError naming the file and line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise StoreError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise StoreError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            yield rec


class JsonlStore:
    """An append-only JSONL file of records that each carry a unique `key`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._keys: set[str] = set()
        if self.path.exists():
            for rec in read_jsonl(self.path):
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
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        self._keys.update(r["key"] for r in fresh)
        return len(fresh)

    def __iter__(self) -> Iterator[dict]:
        if self.path.exists():
            yield from read_jsonl(self.path)
