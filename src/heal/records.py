"""The records stages write and read, typed, and the one key scheme.

Records stay plain dicts on disk and in memory (one JSON object a line, read by every tool); their
shapes are declared here once as TypedDicts, and `read_records` checks each line against its type,
so a bad record is one line naming file:line and the field instead of a KeyError three stages later.
Fields every run has written since the first release are required; fields added later (reasoning
spans, locator info, ...) are optional, so every older run directory still loads.

Keys (one scheme, built and split only here):
    problem         <problem_id>
    Stage 0 sample  <problem_id>/<j>
    answer-guided   <problem_id>/guided/<j>
    GEAR repair     <source sample key>/gear/<c>
    PURE score      the candidate's key
    S_ref           <scorer>|<problem_id>
    eval answer     <model>@<weights>/<problem_id>/<j | greedy | tier<j>>  (tier<j>: a teacher sample that
                    only sets the problem's test tier)
    training ex.    the record's key it was made from
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, StringConstraints, TypeAdapter, ValidationError, with_config
from typing_extensions import NotRequired, TypedDict

from heal.store import StoreError, read_numbered


# ---- keys -------------------------------------------------------------------------------------------

def sample_key(problem_id: str, j: int) -> str:
    return f"{problem_id}/{j}"


def guided_key(problem_id: str, j: int) -> str:
    return f"{problem_id}/guided/{j}"


def repair_key(source_key: str, c: int) -> str:
    return f"{source_key}/gear/{c}"


def repair_source(key: str) -> str:
    """The Stage 0 sample a repair's key continues."""
    return key.rsplit("/gear/", 1)[0]


def continuation_index(key: str) -> int:
    """c of a repair key, j of an answer-guided key."""
    return int(key.rsplit("/", 1)[1])


def reference_key(scorer: str, problem_id: str) -> str:
    return f"{scorer}|{problem_id}"


def reference_problem(key: str, scorer: str) -> str | None:
    """The problem of an S_ref key of `scorer` (None: another scorer's)."""
    name, _, pid = key.partition("|")
    return pid if name == scorer else None


def eval_key(model: str, tag: str, problem_id: str, j: int | str) -> str:
    return f"{model}@{tag}/{problem_id}/{j}"


def tier_sample(j: int) -> str:
    """The `sample` of the teacher's j-th tier sample (eval.tier_samples): scored by nobody, it only
    sets the test problem's tier."""
    return f"tier{j}"


def tier_index(sample: int | str) -> int | None:
    """j of a tier sample's `sample` ("tier3" -> 3); None for a scored or greedy answer."""
    return int(sample[4:]) if isinstance(sample, str) and sample.startswith("tier") else None


# ---- record types -----------------------------------------------------------------------------------

OPEN = ConfigDict(extra="allow", strict=True)  # a record may carry more than its type names


@with_config(OPEN)
class ProblemRecord(TypedDict):
    """problems.jsonl (and eval/problems.jsonl): a problem; Stage 0's also its prompt."""
    id: str
    question: str
    answer: str
    source: NotRequired[str]
    meta: NotRequired[dict[str, Any]]
    prompt: NotRequired[str]
    prompt_ids: NotRequired[list[int]]


@with_config(OPEN)
class SampleRecord(TypedDict):
    """samples.jsonl: one Stage 0 sample, verified."""
    key: str
    problem_id: str
    sample_index: int
    text: str
    token_ids: list[int]
    n_tokens: int
    truncated: bool
    pred: str | None
    correct: bool | None
    finish_reason: NotRequired[str | None]
    logprobs: NotRequired[list[float] | None]
    entropy: NotRequired[list[float] | None]
    seed: NotRequired[int | None]
    reasoning_span: NotRequired[list[int] | None]
    answer_span: NotRequired[list[int] | None]
    truncated_in_reasoning: NotRequired[bool]


@with_config(OPEN)
class TierRecord(TypedDict):
    """tiers.jsonl: a problem's Stage 0 pass rate and tier."""
    problem_id: str
    n: int
    correct: int
    tier: Literal["solved", "hard", "corner", "incomplete"]


@with_config(OPEN)
class CandidateRecord(TypedDict):
    """guided.jsonl and repairs.jsonl: a hinted candidate (kind "guided": an answer-guided sample;
    "repair": a GEAR continuation, with its cut). The training completion is `training_ids`; the
    tokens before `replaced_span[1]` are the kept prefix and the hint's stand-in (absent: none)."""
    key: str
    problem_id: str
    kind: Literal["guided", "repair"]
    continuation_ids: list[int]
    continuation: str
    training_ids: list[int]
    training_text: str
    n_tokens: int
    truncated: bool
    pred: str | None
    correct: bool | None
    derivation_ok: bool
    duplicate: NotRequired[bool]
    # a repair's cut (absent on answer-guided samples: they start from the prompt)
    source_key: NotRequired[str]
    cut_token: NotRequired[int]
    restart: NotRequired[bool]
    replaced_span: NotRequired[list[int]]
    hint_span: NotRequired[list[int]]
    breakpoint: NotRequired[dict[str, Any]]
    locator_info: NotRequired[dict[str, Any]]


@with_config(OPEN)
class ScoredRecord(TypedDict):
    """scored.jsonl: PURE's numbers for one candidate (stored for every candidate, accepted or not)."""
    key: str
    problem_id: str
    kind: Literal["guided", "repair"]
    prefilter: str | None
    S: float | None
    l_max: float | None
    U: float | None
    S_ref: float | None
    rho_ans: float | None
    rho_step: float | None
    scorer: str


@with_config(OPEN)
class ReferenceRecord(TypedDict):
    """reference.jsonl: S_ref, a problem's mean step NLL of the teacher's own Stage 0 samples."""
    key: str
    S_ref: float | None


@with_config(OPEN)
class EvalRecord(TypedDict):
    """eval/evals.jsonl: one answer of one model to one held-out problem."""
    key: str
    model: str
    problem_id: str
    sample: Union[int, Literal["greedy"], Annotated[str, StringConstraints(pattern=r"^tier[0-9]+$")]]
    n_tokens: int
    truncated: bool
    pred: str | None
    correct: bool | None
    derivation_ok: bool | None  # None: not applicable (a multiple-choice problem)
    tag: NotRequired[str]
    text: NotRequired[str]


@with_config(OPEN)
class TrainingExample(TypedDict):
    """data/<set>.jsonl: one training example (prompt ids + completion ids, as the teacher wrote them)."""
    key: str
    problem_id: str
    source: str
    prompt_ids: list[int]
    completion_ids: list[int]
    completion: str
    prompt: NotRequired[str]
    truncated: NotRequired[bool]


@with_config(OPEN)
class StagePlan(TypedDict):
    """One stage of a training method (pace.stage_plan)."""
    name: str
    data: list[str]
    epochs: float
    learning_rate: float
    max_steps: int | None
    schedule: NotRequired[dict[str, Any]]


PROBLEM, SAMPLE, TIER, CANDIDATE, SCORED, REFERENCE, EVAL, EXAMPLE, STAGE = (
    ProblemRecord, SampleRecord, TierRecord, CandidateRecord, ScoredRecord, ReferenceRecord, EvalRecord,
    TrainingExample, StagePlan)


@functools.cache
def _adapter(kind) -> TypeAdapter:
    return TypeAdapter(kind)


class RecordError(StoreError):
    """A record that is not of its file's type (names file:line and the field)."""


def check(rec: dict, kind, where: str = "record") -> dict:
    """`rec` itself if it is a valid `kind`; else RecordError naming `where` and the first bad field."""
    try:
        _adapter(kind).validate_python(rec)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(record)"
        raise RecordError(f"{where}: {kind.__name__} field {loc!r}: {err['msg'].lower()}") from None
    return rec


def read_records(path: str | Path, kind, store: bool = True):
    """The records of a file, each checked against `kind` (file:line on the first bad one). `store`:
    a keyed store (each key once); else a plain JSONL table (problems.jsonl, tiers.jsonl)."""
    for lineno, rec in read_numbered(path, keyed=store):
        yield check(rec, kind, f"{path}:{lineno}")


def hint_free_start(candidate: dict) -> int:
    """Where the candidate's own text starts in its training completion: the end of the replaced
    hint span on a repair, 0 on an answer-guided sample (it has no prefix)."""
    span = candidate.get("replaced_span")
    return span[1] if span else 0
