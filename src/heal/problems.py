"""Problem records and their loaders.

One record type for every source: `id`, `question`, `answer` (ground truth, a string), `source`,
`meta`. Loaders read JSONL / JSON / parquet files and saved HF datasets, generate reasoning-gym
tasks (`reasoning_gym:<task>`), or load CHAMP (`champ`). A malformed record is an error naming
file, line and field; nothing is dropped silently.
"""

from __future__ import annotations

import json
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


def _from_record(rec: Any, where: str, fields: dict[str, str], source: str) -> Problem:
    if not isinstance(rec, dict):
        raise ProblemError(f"{where}: expected an object, got {type(rec).__name__}")
    out = {}
    for name in ("id", "question", "answer"):
        key = fields.get(name, name)
        if key not in rec or rec[key] is None:
            if name == "id":
                continue  # filled from the position below
            raise ProblemError(f"{where}: missing field '{key}'")
        value = rec[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or (name != "id" and not value.strip()):
            raise ProblemError(f"{where}: field '{key}' must be a non-empty string, got {value!r}")
        out[name] = value
    used = {fields.get(n, n) for n in ("id", "question", "answer")} | {"source", "meta"}
    meta = rec.get("meta") or {k: v for k, v in rec.items() if k not in used}
    return Problem(
        id=out.get("id", ""),
        question=out["question"],
        answer=out["answer"].strip(),
        source=rec.get("source") or source,
        meta=meta if isinstance(meta, dict) else {"meta": meta},
    )


def load_file(path: str | Path, fields: dict[str, str] | None = None, on_error: str = "raise",
              skipped: list | None = None) -> list[Problem]:
    """JSONL, JSON (a list of objects) or parquet. Errors name file, line (or row) and field."""
    path = Path(path)
    fields = fields or {}
    if not path.exists():
        raise ProblemError(f"problem file not found: {path}")
    rows: list[tuple[str, Any]] = []
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append((f"{path}:{lineno}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ProblemError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    elif path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ProblemError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if isinstance(data, dict) and "problems" in data:
            data = data["problems"]
        if not isinstance(data, list):
            raise ProblemError(f"{path}: expected a JSON list of problems")
        rows = [(f"{path}[{i}]", r) for i, r in enumerate(data)]
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = [(f"{path} row {i}", r) for i, r in enumerate(pq.read_table(path).to_pylist())]
    else:
        raise ProblemError(f"{path}: unknown problem file type (use .jsonl, .json or .parquet)")
    return _parse_rows(rows, fields, path.stem, str(path), on_error, skipped)


def _parse_rows(rows, fields, source: str, where_all: str, on_error: str, skipped: list | None) -> list[Problem]:
    """Records -> Problems. on_error="raise": the first bad record is an error naming where it is;
    "skip": bad records are left out and each is listed in `skipped` (so it is counted and reported)."""
    problems = []
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
    return _check_unique(problems, where_all)


def load_hf_dataset(path: str | Path, fields: dict[str, str] | None = None, split: str = "train",
                    on_error: str = "raise", skipped: list | None = None) -> list[Problem]:
    """A dataset saved with `save_to_disk` (a Dataset or a DatasetDict with `split`)."""
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise ProblemError(f"{path}: no split '{split}' (has {list(ds)})")
        ds = ds[split]
    rows = [(f"{path} row {i}", r) for i, r in enumerate(ds)]
    return _parse_rows(rows, fields or {}, Path(path).name, str(path), on_error, skipped)


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


def _check_unique(problems: list[Problem], where: str) -> list[Problem]:
    seen: dict[str, int] = {}
    for i, p in enumerate(problems):
        if p.id in seen:
            raise ProblemError(f"{where}: duplicate problem id '{p.id}' (records {seen[p.id]} and {i})")
        seen[p.id] = i
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
                  skipped: list | None = None) -> list[Problem]:
    """Load problems from any supported source, strip fighting suffixes, apply `limit`.

    `size`: how many to generate (reasoning_gym, default 100) or the first N of a file (None: all).
    """
    if source.startswith("reasoning_gym:"):
        problems = load_reasoning_gym(source.split(":", 1)[1], size or 100, seed, params or {}, skipped)
    elif source == "champ":
        problems = load_champ()[:size]
    else:
        path = Path(source)
        if path.is_dir():
            problems = load_hf_dataset(path, fields, on_error=on_error, skipped=skipped)
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
        on_error=data_cfg.on_error, skipped=skipped,
    )
