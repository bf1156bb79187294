"""Problem records and their loaders.

One record type for every source: `id`, `question`, `answer` (ground truth, a string), `source`,
`meta`. Loaders read JSONL / JSON / CSV / parquet files and saved HF datasets, generate reasoning-gym
tasks (`reasoning_gym:<task>`), or load CHAMP (`champ`). Benchmark presets (`math500:FILE`,
`aime:`, `amc:`, `gsm8k:`, `gpqa:`) read a benchmark's standard column layout from a local file or a
saved dataset (`PRESETS`). A malformed record is an error naming file, line and field; nothing is
dropped silently.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import math
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable


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


def _csv_rows(path: Path) -> list[tuple[str, Any]]:
    """One record per CSV row, keyed by the header (GPQA ships as CSV). A quoted field may span lines,
    so each row is named by the line it starts on."""
    rows: list[tuple[str, Any]] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            start = 2  # line 1 is the header
            for rec in reader:
                where = f"{path}:{start}"
                start = reader.line_num + 1
                if None in rec:  # more cells than the header has names
                    rows.append((where, _Unreadable(f"{len(rec[None])} more cell(s) than the header's {len(reader.fieldnames)} columns")))
                    continue
                rows.append((where, rec))
    except UnicodeDecodeError as e:
        raise ProblemError(f"{path}: not valid UTF-8 (byte 0x{e.object[e.start]:02x}); re-save the file as UTF-8") from None
    except csv.Error as e:
        raise ProblemError(f"{path}: not a readable CSV file ({e})") from None
    return rows


_READERS = {".jsonl": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}


def load_file(path: str | Path, fields: dict[str, str] | None = None, on_error: str = "raise",
              skipped: list | None = None, preset: str | None = None) -> list[Problem]:
    """JSONL, JSON (a list of objects), CSV or parquet; `preset`: a benchmark layout (PRESETS).
    Errors name file, line (or row) and field."""
    path = Path(path)
    if not path.exists():
        raise ProblemError(f"problem file not found: {path}")
    if path.suffix not in _READERS:
        raise ProblemError(f"{path}: unknown problem file type (use .jsonl, .json, .csv or .parquet)")
    _check_fields_or_raise(fields or {})
    return _parse_rows(_READERS[path.suffix](path), fields or {}, preset or path.stem, on_error, skipped, preset)


def _check_fields_or_raise(fields: dict[str, str]) -> None:
    try:
        check_fields(fields)
    except ValueError as e:
        raise ProblemError(str(e)) from None


def _parse_rows(rows, fields, source: str, on_error: str, skipped: list | None,
                preset: str | None = None) -> list[Problem]:
    """Records -> Problems. on_error="raise": the first bad record is an error naming where it is;
    "skip": bad records are left out and each is listed in `skipped` (so it is counted and reported)."""
    problems, wheres = [], []
    for i, (where, r) in enumerate(rows):
        try:
            p = _preset_record(r, where, preset, fields) if preset else _from_record(r, where, fields, source=source)
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
                    on_error: str = "raise", skipped: list | None = None, preset: str | None = None) -> list[Problem]:
    """A dataset saved with `save_to_disk`: a Dataset, or one split of a DatasetDict (`split`; None:
    "train" if it has one, else its only split). `preset`: a benchmark layout (PRESETS)."""
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
    return _parse_rows(rows, fields or {}, preset or path.name, on_error, skipped, preset)


# ---------------------------------------------------------------- benchmark presets
# `data.source: <preset>:<file or saved dataset folder>` reads a benchmark's standard layout: which
# columns hold id / question / answer, how the gold answer is cut out of its column, and what the
# question needs appended. Everything else in a record is kept in the problem's meta.


@dataclass(frozen=True)
class Preset:
    # id / question / answer -> the field paths tried in order; the first one a record has is used
    # (AIME copies spell `problem` or `Problem`). A field not listed is read from its own name.
    fields: dict[str, tuple[str, ...]]
    answer: Callable[[str, str], str] | None = None  # (gold as read, where) -> the gold answer
    keep_raw_answer_as: str | None = None  # meta key for the answer column as read (GSM8K's worked solution)
    build: Callable[[Problem, str], Problem] | None = None  # the whole record rewritten (GPQA's options)
    suffix: str = ""  # appended to the question after a blank line


_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _gsm8k_answer(text: str, where: str) -> str:
    """GSM8K's `answer` is the worked solution and then `#### <number>`: the gold is what follows the
    last `####`, thousands separators removed so that the gold has one spelling (math-verify reads
    "1,234" as 1234, but a bare "1,2" as a set)."""
    if "####" not in text:
        raise ProblemError(f"{where}: field 'answer' has no '#### <final answer>' (the gsm8k preset reads the "
                           f"gold after '####')")
    gold = text.rsplit("####", 1)[1].strip()
    if not gold:
        raise ProblemError(f"{where}: field 'answer' has nothing after '####'")
    return gold.replace(",", "") if _THOUSANDS.fullmatch(gold) else gold


def _integer_answer(text: str, where: str) -> str:
    """AIME / AMC golds are integers, but some copies store them as floats (AMC: 142.0)."""
    m = re.fullmatch(r"(-?\d+)\.0*", text)
    return m.group(1) if m else text


CHOICE_LETTERS = "ABCD"
GPQA_SUFFIX = "Answer with the letter (A, B, C or D) of the correct option."


def _choice_seed(question: str) -> int:
    """A seed fixed per problem: a hash of its question, so every copy of the file (and every run)
    shows the options in the same order, independent of row order and of data.seed."""
    return int.from_bytes(hashlib.sha256(question.encode()).digest()[:8], "big")


def _gpqa_build(p: Problem, where: str) -> Problem:
    """GPQA rows hold the correct answer and three incorrect ones: the question gets the four options
    in a per-problem shuffled order (A-D), and the gold becomes the correct option's letter, verified
    as a letter (meta.answer_kind = "choice", heal.verify.choice_letter)."""
    options = [p.answer]
    for i in (1, 2, 3):
        key = f"Incorrect Answer {i}"
        value = p.meta.pop(key, None)
        if value is None:
            raise ProblemError(f"{where}: missing field '{key}' (the gpqa preset reads 'Correct Answer' and "
                               f"'Incorrect Answer 1' to '3')")
        options.append(_as_text(value, where, key, allow_empty=False).strip())
    order = list(range(len(options)))
    random.Random(_choice_seed(p.question)).shuffle(order)
    shown = [options[j] for j in order]
    letter = CHOICE_LETTERS[order.index(0)]
    question = p.question.strip() + "\n\n" + "\n".join(f"{c}) {o}" for c, o in zip(CHOICE_LETTERS, shown))
    meta = {**p.meta, "answer_kind": "choice", "choices": dict(zip(CHOICE_LETTERS, shown)), "answer_text": p.answer}
    return Problem(id=p.id, question=question, answer=letter, source=p.source, meta=meta)


_AIME = Preset({"id": ("id", "ID"), "question": ("problem", "Problem", "question"), "answer": ("answer", "Answer")},
               answer=_integer_answer)
PRESETS: dict[str, Preset] = {
    # HuggingFaceH4/MATH-500: problem, solution, answer, subject, level, unique_id
    "math500": Preset({"id": ("unique_id", "id"), "question": ("problem",), "answer": ("answer",)}),
    # AI-MO/aimo-validation-aime (id, problem, solution, answer, url), AIME_2024 copies with Problem / Answer
    "aime": _AIME,
    "amc": _AIME,  # AI-MO/aimo-validation-amc: id, problem, answer (a float), url
    # openai/gsm8k: question, answer ("...worked solution...\n#### 72")
    "gsm8k": Preset({"question": ("question",), "answer": ("answer",)}, answer=_gsm8k_answer,
                    keep_raw_answer_as="solution"),
    # Idavidrein/gpqa (gpqa_diamond.csv): Question, Correct Answer, Incorrect Answer 1-3, Record ID, ...
    "gpqa": Preset({"id": ("Record ID", "id"), "question": ("Question",), "answer": ("Correct Answer",)},
                   build=_gpqa_build, suffix=GPQA_SUFFIX),
}
PRESETS["gpqa_diamond"] = PRESETS["gpqa"]  # the same layout as main / extended
_PRESET_RE = re.compile(r"([a-z][a-z0-9_]*):(.+)", re.DOTALL)


def split_preset(source: str) -> tuple[str | None, str]:
    """`math500:/data/test.jsonl` -> ("math500", "/data/test.jsonl"); any other source -> (None, source).
    An unknown prefix is an error naming the presets, unless the whole source is an existing path."""
    m = _PRESET_RE.fullmatch(source)
    if not m or m.group(1) == "reasoning_gym":
        return None, source
    if m.group(1) in PRESETS:
        return m.group(1), m.group(2)
    if Path(source).exists():
        return None, source  # a file whose name has a colon
    raise ProblemError(f"data.source '{source}': unknown benchmark preset '{m.group(1)}' "
                       f"(presets: {', '.join(sorted(PRESETS))}; or give a file path)")


def benchmark_name(source: str) -> str:
    """What reports call a problem set: the preset (`math500`), `reasoning_gym:<task>`, `champ`, or the
    file or folder name."""
    preset, location = split_preset(source)
    if preset:
        return preset
    if source.startswith("reasoning_gym:") or source == "champ":
        return source
    return Path(location).name or source


def _has(rec: dict, path: str) -> bool:
    try:
        _lookup(rec, path)
    except KeyError:
        return False
    return True


def _preset_record(rec: Any, where: str, name: str, fields: dict[str, str]) -> Problem:
    """One record in a preset's layout -> Problem. A data.fields entry other than its default (`id: id`,
    ...) replaces the preset's paths for that field."""
    if isinstance(rec, _Unreadable):
        raise ProblemError(f"{where}: {rec.message}")
    if not isinstance(rec, dict):
        raise ProblemError(f"{where}: expected an object, got {type(rec).__name__}")
    preset = PRESETS[name]
    mapping = {}
    for key in FIELD_NAMES:
        paths = preset.fields.get(key, (key,))
        if fields.get(key, key) != key:
            mapping[key] = fields[key]
            continue
        found = next((path for path in paths if _has(rec, path)), None)
        if found is None and key != "id" and len(paths) > 1:
            raise ProblemError(f"{where}: missing field '{paths[0]}' (the {name} preset reads "
                               + " or ".join(f"'{x}'" for x in paths) + ")")
        mapping[key] = found or paths[0]
    p = _from_record(rec, where, mapping, source=name)
    if preset.keep_raw_answer_as:
        p.meta.setdefault(preset.keep_raw_answer_as, p.answer)
    if preset.answer:
        p.answer = preset.answer(p.answer, where)
    if preset.build:
        p = preset.build(p, where)
    if preset.suffix:
        p.question = f"{p.question.rstrip()}\n\n{preset.suffix}"
    return p


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
    preset, location = split_preset(source)
    path = Path(location)
    if split is not None and not path.is_dir():
        raise ProblemError(f"data.split ('{split}') applies only to a saved DatasetDict folder, not to {source}")
    if source.startswith("reasoning_gym:"):
        problems = load_reasoning_gym(source.split(":", 1)[1], size or 100, seed, params or {}, skipped)
    elif source == "champ":
        problems = load_champ()[:size]
    else:
        if path.is_dir():
            problems = load_hf_dataset(path, fields, split=split, on_error=on_error, skipped=skipped, preset=preset)
        else:
            problems = load_file(path, fields, on_error=on_error, skipped=skipped, preset=preset)
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
