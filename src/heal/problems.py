"""Problem records and their loaders.

One record type for every source: `id`, `question`, `answer` (ground truth, a string), `source`,
`meta`. Loaders read JSONL / JSON / parquet files and saved HF datasets, generate reasoning-gym
tasks (`reasoning_gym:<task>`), or load CHAMP (`champ`). A malformed record is an error naming
file, line and field; nothing is dropped silently.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class ProblemError(ValueError):
    pass


@dataclass
class Problem:
    id: str
    question: str
    answer: str
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


FIELD_NAMES = ("id", "question", "answer")
_PATH_RE = re.compile(r"[^.\[\]]+(?:\.[^.\[\]]+|\[-?\d+\])*")
_STEP_RE = re.compile(r"\[(-?\d+)\]|\.?([^.\[\]]+)")


def parse_field_path(path: str) -> list[str | int]:
    """`input[-1].content` -> ["input", -1, "content"]: keys separated by dots, list indices in
    brackets (negative from the end). ValueError when the path is not of that form."""
    if not isinstance(path, str) or not _PATH_RE.fullmatch(path):
        raise ValueError(f"'{path}' is not a field path (keys joined by '.', list indices as [0] or [-1], "
                         f"e.g. 'input[-1].content')")
    return [int(m.group(1)) if m.group(1) is not None else m.group(2) for m in _STEP_RE.finditer(path)]


def check_fields(fields: dict[str, str]) -> None:
    """ValueError unless every key is id/question/answer and every value a field path."""
    unknown = sorted(set(fields) - set(FIELD_NAMES))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in data.fields (only {list(FIELD_NAMES)})")
    for path in fields.values():
        parse_field_path(path)


def _lookup(rec: dict, path: str) -> tuple[str, Any]:
    """(top-level key used, value) of `path` in rec; KeyError with what is missing ("" when the
    top-level key itself is). A key spelled exactly like the path wins, so flat keys with dots work."""
    if path in rec:
        return path, rec[path]
    steps = parse_field_path(path)
    value: Any = rec
    for i, step in enumerate(steps):
        if isinstance(step, int):
            ok = isinstance(value, list) and -len(value) <= step < len(value)
        else:
            ok = isinstance(value, dict) and step in value
        if not ok:
            what = f"{_path_str(steps[:i])} is {_short(value, 40)}" if i else ""
            if i and isinstance(step, int) and not isinstance(value, list):
                what += ", not a list"
            raise KeyError(what)
        value = value[step]
    return steps[0], value


def _path_str(steps: list[str | int]) -> str:
    return "".join(f"[{s}]" if isinstance(s, int) else (f".{s}" if i else s) for i, s in enumerate(steps))


def _short(value: Any, n: int = 80) -> str:
    r = repr(value)
    return r if len(r) <= n else r[: n - 3] + "..."


def _as_text(value: Any, where: str, path: str, allow_empty: bool) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        # json.loads reads NaN/Infinity and parquet stores them; as text they would become the gold "nan".
        raise ProblemError(f"{where}: field '{path}' is {value}, not a usable value")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        hint = " (pick one element with a path in data.fields, e.g. 'input[-1].content')" \
            if isinstance(value, (list, dict)) else ""
        raise ProblemError(f"{where}: field '{path}' must be a non-empty string, got {_short(value)}{hint}")
    return value


class _Unreadable:
    """A row that could not be read at all (bad JSON, bad UTF-8): an error like any bad record, so
    `on_error: skip` skips and lists it too."""

    def __init__(self, message: str):
        self.message = message


def _field(rec: dict, where: str, path: str, required: bool) -> tuple[str | None, Any]:
    """(top-level key, value) of one mapped field; (None, None) for an optional field that is absent."""
    try:
        key, value = _lookup(rec, path)
    except KeyError as e:
        if not required:
            return None, None
        detail = f" ({e.args[0]})" if e.args and e.args[0] else ""
        raise ProblemError(f"{where}: missing field '{path}'{detail}") from None
    if value is None and required:
        raise ProblemError(f"{where}: missing field '{path}'")
    return key, value


def _from_record(rec: Any, where: str, fields: dict[str, str], source: str) -> Problem:
    if isinstance(rec, _Unreadable):
        raise ProblemError(f"{where}: {rec.message}")
    if not isinstance(rec, dict):
        raise ProblemError(f"{where}: expected an object, got {type(rec).__name__}")
    out, used, other_answers = {}, {"source", "meta"}, None
    for name in FIELD_NAMES:
        path = fields.get(name, name)
        key, value = _field(rec, where, path, required=name != "id")  # a missing id is filled in _parse_rows
        used.add(key)
        if value is None:
            continue
        if name == "answer" and isinstance(value, list):
            # Several accepted answers (OpenAI evals' `ideal`): the first is the gold, the rest kept in meta.
            if not value:
                raise ProblemError(f"{where}: field '{path}' is an empty list")
            value, other_answers = value[0], value[1:]
        out[name] = _as_text(value, where, path, allow_empty=name == "id")
    meta = rec.get("meta") or {k: v for k, v in rec.items() if k not in used}
    meta = dict(meta) if isinstance(meta, dict) else {"meta": meta}
    if other_answers:
        meta["other_answers"] = other_answers
    return Problem(
        id=out.get("id", ""),
        question=out["question"],
        answer=out["answer"].strip(),
        source=rec.get("source") or source,
        meta=meta,
    )


def _decode(raw: bytes, encoding: str) -> str:
    """raw as text; ProblemError-ready message (without the location) on invalid UTF-8."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise ValueError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                         f"re-save the file as UTF-8") from None


def _jsonl_rows(path: Path) -> list[tuple[str, Any]]:
    """(where, record) per non-blank line; a line that is not UTF-8 or not JSON becomes _Unreadable."""
    rows: list[tuple[str, Any]] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = _decode(raw, "utf-8-sig" if lineno == 1 else "utf-8")  # a BOM only opens the file
            except ValueError as e:
                rows.append((where, _Unreadable(str(e))))
                continue
            if not line.strip():
                continue
            try:
                rows.append((where, json.loads(line)))
            except json.JSONDecodeError as e:
                rows.append((where, _Unreadable(f"not valid JSON ({e.msg})")))
    return rows


def _json_rows(path: Path) -> list[tuple[str, Any]]:
    raw = path.read_bytes()
    raw = raw[len(codecs.BOM_UTF8):] if raw.startswith(codecs.BOM_UTF8) else raw
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ProblemError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); re-save the file as UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProblemError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(data, dict) and "problems" in data:
        data = data["problems"]
    if not isinstance(data, list):
        raise ProblemError(f"{path}: expected a JSON list of problems")
    return [(f"{path}[{i}]", r) for i, r in enumerate(data)]


def _parquet_rows(path: Path) -> list[tuple[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:  # not parquet, truncated, or unreadable
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ProblemError(f"{path}: not a readable parquet file ({reason})") from None
    return [(f"{path} row {i}", r) for i, r in enumerate(table.to_pylist())]


def load_file(path: str | Path, fields: dict[str, str] | None = None, on_error: str = "raise",
              skipped: list | None = None) -> list[Problem]:
    """JSONL, JSON (a list of objects) or parquet. Errors name file, line (or row) and field."""
    path = Path(path)
    if not path.exists():
        raise ProblemError(f"problem file not found: {path}")
    readers = {".jsonl": _jsonl_rows, ".json": _json_rows, ".parquet": _parquet_rows}
    if path.suffix not in readers:
        raise ProblemError(f"{path}: unknown problem file type (use .jsonl, .json or .parquet)")
    _check_fields_or_raise(fields or {})
    return _parse_rows(readers[path.suffix](path), fields or {}, path.stem, on_error, skipped)


def _check_fields_or_raise(fields: dict[str, str]) -> None:
    try:
        check_fields(fields)
    except ValueError as e:
        raise ProblemError(str(e)) from None


def _parse_rows(rows, fields, source: str, on_error: str, skipped: list | None) -> list[Problem]:
    """Records -> Problems. on_error="raise": the first bad record is an error naming where it is;
    "skip": bad records are left out and each is listed in `skipped` (so it is counted and reported)."""
    problems, wheres = [], []
    for i, (where, r) in enumerate(rows):
        try:
            p = _from_record(r, where, fields, source=source)
        except ProblemError as e:
            if on_error == "raise":
                raise
            if skipped is not None:
                skipped.append(str(e))
            continue
        p.id = p.id or f"{source}-{i}"
        problems.append(p)
        wheres.append(where)
    return _check_unique(problems, wheres)


_SAVED_DATASET_FILES = (("state.json", "dataset_info.json"), ("dataset_dict.json",))


def _pick_split(ds, split: str | None, path: Path):
    """One split of a saved DatasetDict: `split`, else "train", else the only one."""
    names = list(ds)
    if split is not None:
        if split not in ds:
            raise ProblemError(f"{path}: no split '{split}' (has {names}); set data.split to one of them")
        return ds[split]
    if "train" in ds:
        return ds["train"]
    if len(names) == 1:
        return ds[names[0]]
    raise ProblemError(f"{path}: no 'train' split and more than one other ({names}); set data.split to one of them"
                       if names else f"{path}: a saved DatasetDict with no splits")


def load_hf_dataset(path: str | Path, fields: dict[str, str] | None = None, split: str | None = None,
                    on_error: str = "raise", skipped: list | None = None) -> list[Problem]:
    """A dataset saved with `save_to_disk`: a Dataset, or one split of a DatasetDict (`split`; None:
    "train" if it has one, else its only split)."""
    path = Path(path)
    _check_fields_or_raise(fields or {})
    if not any(all((path / f).is_file() for f in files) for files in _SAVED_DATASET_FILES):
        found = sorted({f.suffix for f in path.iterdir() if f.suffix in (".jsonl", ".json", ".parquet")})
        hint = f"; it holds {'/'.join(found)} files: name one of them" if found else ""
        raise ProblemError(f"{path}: a directory, but not a dataset saved with datasets' save_to_disk "
                           f"(no state.json or dataset_dict.json){hint}")
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as e:  # a damaged save: say what datasets said, in one line
        reason = (str(e).strip().splitlines() or [""])[0]
        raise ProblemError(f"{path}: cannot load the saved dataset ({type(e).__name__}: {reason})") from None
    if isinstance(ds, DatasetDict):
        ds = _pick_split(ds, split, path)
    elif split is not None:
        raise ProblemError(f"{path}: a single Dataset without splits, but data.split is '{split}'; remove data.split")
    rows = [(f"{path} row {i}", r) for i, r in enumerate(ds)]
    return _parse_rows(rows, fields or {}, path.name, on_error, skipped)


def _expression_disagrees(entry: dict) -> bool:
    """True when an arithmetic task's answer is not the value of its own expression (reasoning-gym
    0.1.25 `basic_arithmetic` with allow_parentheses=False evaluates left to right, ignoring
    precedence: "90 - 3 + 47 * 46" gets 6164)."""
    from heal.stepcheck import evaluate

    expr = (entry.get("metadata") or {}).get("expression")
    if not isinstance(expr, str):
        return False
    value, answer = evaluate(expr.replace("×", "*")), evaluate(str(entry["answer"]))
    return value is not None and answer is not None and value != answer


def load_reasoning_gym(task: str, size: int, seed: int, params: dict[str, Any],
                       skipped: list | None = None) -> list[Problem]:
    import reasoning_gym

    try:
        ds = reasoning_gym.create_dataset(task, size=size, seed=seed, **params)
    except Exception as e:  # unknown task or bad params: say which
        raise ProblemError(f"reasoning_gym:{task} with {params}: {e}") from None
    problems = []
    for i, entry in enumerate(ds):
        if _expression_disagrees(entry):
            if skipped is not None:
                skipped.append(f"reasoning_gym:{task} item {i}: answer {entry['answer']} is not the value of "
                               f"its expression {entry['metadata']['expression']!r} (generator bug); skipped")
            continue
        meta = dict(entry.get("metadata") or {})
        meta = json.loads(json.dumps(meta, default=str))  # tuples etc. -> JSON-safe
        problems.append(
            Problem(
                id=f"{task}-s{seed}-{i}",
                question=entry["question"],
                answer=str(entry["answer"]).strip(),
                source=f"reasoning_gym:{task}",
                meta={"task": task, "seed": seed, "index": i, **meta},
            )
        )
    return problems


def load_champ() -> list[Problem]:
    import champ_dataset

    ds = champ_dataset.load("v0")
    problems = []
    for pid, p in ds.problems.items():
        problems.append(
            Problem(
                id=str(pid),
                question=p.text,
                answer=str(p.answer).strip(),
                source="champ",
                meta={"category": getattr(p, "category", None)},
            )
        )
    return problems


def _check_unique(problems: list[Problem], wheres: list[str]) -> list[Problem]:
    seen: dict[str, str] = {}
    for p, where in zip(problems, wheres):
        if p.id in seen:
            raise ProblemError(f"duplicate problem id '{p.id}': {seen[p.id]} and {where}")
        seen[p.id] = where
    return problems


def strip_suffixes(question: str, suffixes: list[str]) -> str:
    q = question.rstrip()
    for s in suffixes:
        if s and q.endswith(s):
            q = q[: -len(s)].rstrip()
    return q


def load_problems(source: str, size: int | None = None, seed: int = 0, params: dict | None = None,
                  fields: dict[str, str] | None = None, limit: int | None = None,
                  suffixes: list[str] | None = None, on_error: str = "raise",
                  skipped: list | None = None, split: str | None = None) -> list[Problem]:
    """Load problems from any supported source, strip fighting suffixes, apply `limit`.

    `size`: how many to generate (reasoning_gym, default 100) or the first N of a file (None: all).
    `split`: the split of a saved DatasetDict (None: "train" if present, else its only split).
    """
    for name, value in (("size", size), ("limit", limit)):
        if value is not None and value <= 0:  # problems[:-1] would silently drop the last problem
            raise ProblemError(f"data.{name} must be > 0 (or null for all), got {value}")
    path = Path(source)
    if split is not None and not path.is_dir():
        raise ProblemError(f"data.split ('{split}') applies only to a saved DatasetDict folder, not to {source}")
    if source.startswith("reasoning_gym:"):
        problems = load_reasoning_gym(source.split(":", 1)[1], size or 100, seed, params or {}, skipped)
    elif source == "champ":
        problems = load_champ()[:size]
    else:
        if path.is_dir():
            problems = load_hf_dataset(path, fields, split=split, on_error=on_error, skipped=skipped)
        else:
            problems = load_file(path, fields, on_error=on_error, skipped=skipped)
        if size is not None:
            problems = problems[:size]
    if limit is not None:
        problems = problems[:limit]
    for p in problems:
        p.question = strip_suffixes(p.question, suffixes or [])
    return problems


def from_config(data_cfg, skipped: list | None = None) -> list[Problem]:
    return load_problems(
        data_cfg.source, size=data_cfg.size, seed=data_cfg.seed, params=data_cfg.params,
        fields=data_cfg.fields, limit=data_cfg.limit, suffixes=data_cfg.strip_suffixes,
        on_error=data_cfg.on_error, skipped=skipped, split=data_cfg.split,
    )
