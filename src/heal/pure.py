"""PURE: Perplexity-Uncertainty Ratio Estimator over every hinted candidate (`heal filter`).

Each answer-correct candidate (GEAR repairs, answer-guided samples) is scored as the student will
see it: the hint-free prompt and the training completion (hint span replaced), one teacher-forced
pass of the scorer. Stored for every candidate, accepted or not, so a threshold can be re-applied
without rescoring:
- l_j: mean token NLL of step j, for the steps after the cut (guided samples: all steps);
  S = mean_j l_j, l_max = max_j l_j;
- U: mean NLL of the final answer's tokens (inside the last \\boxed{});
- S_ref: mean step NLL of the teacher's own unhinted Stage 0 trajectories of the problem;
- rho_ans = U / (S + eps), rho_step = l_max / (S_ref + eps).
Before scoring, a text that mentions the hint or states the answer before deriving it is rejected.

Artifacts: scored.jsonl (key = candidate key), reference.jsonl (S_ref per problem).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from heal import reasoning
from heal.config import RunConfig, echo_config, scorer_config
from heal.records import CANDIDATE, REFERENCE, SCORED, hint_free_start, read_records, reference_key, reference_problem
from heal.rundir import RunMismatch, check_settings, writes_run
from heal.entropy import step_spans_from_pieces, token_pieces
from heal.gear import strip_stop
from heal.hints import mentions_hint, states_answer_before_deriving
from heal.runs import dispatch, load_stage0, merge_shards, progress_bar
from heal.store import JsonlStore
from heal.verify import boxed_span


def answer_token_span(pieces: Sequence[str]) -> tuple[int, int] | None:
    """Token span [a, b) covering the content of the last complete \\boxed{} in the joined pieces."""
    text = "".join(pieces)
    span = boxed_span(text)
    if span is None or span[1] <= span[0]:
        return None
    start_char, end_char = span
    pos, a, b = 0, None, None
    for i, piece in enumerate(pieces):
        lo, hi = pos, pos + len(piece)
        if a is None and hi > start_char:
            a = i
        if lo < end_char:
            b = i + 1
        pos = hi
    return (a, b) if a is not None and b is not None and b > a else None


def step_nll(nll: Sequence[float], spans: Sequence[tuple[int, int]]) -> list[float]:
    v = np.asarray(nll, dtype=np.float64)
    return [float(v[a:b].mean()) for a, b in spans if b > a]


def pure_scores(nll: Sequence[float], spans: Sequence[tuple[int, int]], answer_span: tuple[int, int] | None,
                s_ref: float, eps: float = 0.01) -> dict:
    """The PURE numbers of one candidate from its per-token NLLs (pure function)."""
    ls = step_nll(nll, spans)
    if not ls:
        return {"l_steps": [], "S": None, "l_max": None, "U": None, "S_ref": s_ref, "rho_ans": None, "rho_step": None}
    s, l_max = float(np.mean(ls)), float(np.max(ls))
    u = float(np.mean(np.asarray(nll)[answer_span[0] : answer_span[1]])) if answer_span else None
    return {
        "l_steps": [round(x, 5) for x in ls], "S": s, "l_max": l_max, "U": u, "S_ref": s_ref,
        "rho_ans": None if u is None else u / (s + eps),
        "rho_step": l_max / (s_ref + eps),
    }


# Every score a verdict can use (`pure.score`): the stored ones, and two derived from them.
SCORES = ("rho_step", "rho_ans", "S", "l_max", "rho_sum", "S_rel")


def score_value(rec: dict, name: str, eps: float = 0.01) -> float | None:
    """Score `name` of a scored record: stored (S, l_max, rho_ans, rho_step) or derived: rho_sum =
    rho_ans + rho_step; S_rel = S / (S_ref + eps), the mean step NLL relative to the teacher's own
    (scale-free like rho_step, but the mean rather than the worst step). None where undefined."""
    if name == "rho_sum":
        a, b = rec.get("rho_ans"), rec.get("rho_step")
        return None if a is None or b is None else a + b
    if name == "S_rel":
        s, ref = rec.get("S"), rec.get("S_ref")
        return None if s is None or ref is None else s / (ref + eps)
    if name not in SCORES:
        raise ValueError(f"unknown PURE score {name!r}; use one of {SCORES}")
    return rec.get(name)


def prefilter(text: str, answer: str, cfg) -> str | None:
    """Reason to reject before scoring, or None."""
    if cfg.reject_hint_mentions and (phrase := mentions_hint(text)):
        return f"mentions the hint ({phrase!r})"
    if cfg.reject_early_answer and states_answer_before_deriving(text, answer):
        return "states the answer before deriving it"
    return None


def verdict(rec: dict, cfg) -> tuple[bool, str]:
    """Accept or reject a scored candidate under `cfg` (a PureConfig): re-applicable at any time."""
    if rec.get("prefilter"):
        return False, rec["prefilter"]
    value = score_value(rec, cfg.score, cfg.eps)
    if value is None:
        return False, f"no {cfg.score} (no boxed answer or no steps)"
    if value > cfg.threshold:
        return False, f"{cfg.score} {value:.3f} > {cfg.threshold}"
    if cfg.verify_steps == "arithmetic" and not rec.get("derivation_ok"):
        return False, "step checker: derivation not verified"
    return True, "accepted"


def reasoning_steps(ids: list[int], pieces: list[str], tokenizer, fmt: reasoning.Format):
    """(steps, answer token span): on a reasoning trace the steps are those of the reasoning block
    (clipped at its end tag) and the answer span is the last \\boxed{} after the block; otherwise
    every step and the last \\boxed{} anywhere."""
    all_spans = step_spans_from_pieces(pieces)
    if not fmt.enabled:
        return all_spans, answer_token_span(pieces)
    sp = reasoning.spans(ids, tokenizer, fmt)
    r0, r1 = sp.reasoning
    steps = [(max(a, r0), min(b, r1)) for a, b in all_spans if b > r0 and a < r1 and min(b, r1) > max(a, r0)]
    ans = None
    if sp.answer:
        local = answer_token_span(pieces[sp.answer[0]:])
        ans = (local[0] + sp.answer[0], local[1] + sp.answer[0]) if local else None
    return steps, ans


def score_candidate(scorer, prompt_ids: list[int], training_ids: list[int], scored_from: int, answer: str,
                    s_ref: float | None, stop: set[int], eps: float, fmt: reasoning.Format = reasoning.NONE) -> dict:
    """Teacher-forced pass over one training completion; the PURE numbers for its steps from
    token `scored_from` on (the end of the replaced hint span; 0 for guided samples). Without a
    reference (no Stage 0 trajectory scored), S_ref falls back to the prefix's steps; with no
    prefix either, rho_step stays None and the verdict rejects. On a reasoning trace (`fmt`) the
    steps are the reasoning block's and U is read over the \\boxed{} answer after it."""
    ids, _ = strip_stop(list(training_ids), None, stop)
    nll = [-x for x in scorer.score(prompt_ids, ids).logprobs]
    pieces = token_pieces(scorer.tokenizer, ids)
    all_spans, answer_span = reasoning_steps(ids, pieces, scorer.tokenizer, fmt)
    spans = [sp for sp in all_spans if sp[0] >= scored_from]
    ref_source = "stage0"
    if s_ref is None:
        prefix = step_nll(nll, [sp for sp in all_spans if sp[1] <= scored_from and sp[0] < scored_from])
        s_ref, ref_source = (float(np.mean(prefix)), "prefix") if prefix else (None, "none")
    out = pure_scores(nll, spans, answer_span, s_ref if s_ref is not None else float("nan"), eps)
    if s_ref is None:
        out.update(S_ref=None, rho_step=None)
    out["S_ref_source"] = ref_source
    return out


def reference_nll(scorer, prompt_ids: list[int], trajectories: list[list[int]], stop: set[int],
                  fmt: reasoning.Format = reasoning.NONE) -> float | None:
    """S_ref: mean over trajectories of their mean step NLL under the scorer (reasoning steps only
    on reasoning traces, as the candidates are scored)."""
    vals = []
    for traj in trajectories:
        ids, _ = strip_stop(list(traj), None, stop)
        if not ids:
            continue
        nll = [-x for x in scorer.score(prompt_ids, ids).logprobs]
        ls = step_nll(nll, reasoning_steps(ids, token_pieces(scorer.tokenizer, ids), scorer.tokenizer, fmt)[0])
        if ls:
            vals.append(float(np.mean(ls)))
    return float(np.mean(vals)) if vals else None


def make_scorer(cfg: RunConfig):
    """The PURE scorer's engine (heal.config.scorer_config says which model, engine and settings)."""
    from heal.config import scorer_config
    from heal.engines import make_engine

    return make_engine(scorer_config(cfg))


def candidates(run_dir: Path) -> list[dict]:
    """Every answer-correct, non-duplicate hinted candidate of the run."""
    out = []
    for name in ("repairs.jsonl", "guided.jsonl"):
        if (run_dir / name).exists():
            out += [r for r in read_records(run_dir / name, CANDIDATE) if r["correct"] is True and not r.get("duplicate")]
    return out


def scorer_name(cfg: RunConfig) -> str:
    return f"{cfg.pure.scorer or cfg.teacher.model}@{cfg.pure.scorer_engine}"


STORE, REFERENCES = "scored.jsonl", "reference.jsonl"


@writes_run("filter")
def run_filter(cfg: RunConfig, scorer=None, progress: bool = True, log=print) -> dict:
    """Score every answer-correct candidate not scored yet (locally on `scorer` or a scorer built from
    the config, or sharded over Ray workers) and summarise the verdicts."""
    run_dir = Path(cfg.output_dir)
    problems, by_problem, _ = load_stage0(run_dir)
    echo_config(cfg, run_dir)
    cands = candidates(run_dir)
    merge_shards(run_dir, [STORE, REFERENCES], log)
    store = JsonlStore(run_dir / STORE)
    name = scorer_name(cfg)
    pin = run_dir / "scorer_config.json"
    if not pin.exists():  # a run scored before the pin existed: its records name their scorer
        others = {r["scorer"] for r in read_records(store.path, SCORED)} - {name} if store.path.exists() else set()
        if others:
            raise RunMismatch(f"{store.path} was scored by {sorted(others)}, not {name}: scores of two scorers are "
                              f"not comparable; use another output_dir (or move scored.jsonl away) to rescore")
    # scores of two scorers are not comparable; score and threshold are not pinned: a verdict is
    # re-applied to the stored scores whenever they change
    check_settings(pin, {"scorer": scorer_config(cfg)}, store.path, "scored")
    refs = {}
    if (run_dir / REFERENCES).exists():
        for r in read_records(run_dir / REFERENCES, REFERENCE):
            if (pid := reference_problem(r["key"], name)) is not None:
                refs[pid] = r["S_ref"]
    todo = [c for c in cands if c["key"] not in store]
    log(f"filter: {len(cands)} answer-correct candidates, {len(todo)} to score")
    # A problem's S_ref is computed once, by the worker that scores its first candidate.
    items, first = [], set()
    for c in todo:
        pid = c["problem_id"]
        need_ref = pid not in refs and pid not in first
        first.add(pid)
        items.append({"problem_id": pid, "problem": problems[pid], "candidate": c, "s_ref": refs.get(pid),
                      "trajectories": [s["token_ids"] for s in by_problem.get(pid, [])] if need_ref else None})
    dispatch(cfg, scorer_config(cfg), filter_work, items, run_dir, (STORE, REFERENCES), engine=scorer,
             progress=progress, log=log)
    return summarize_filter(run_dir, cfg)


def filter_work(cfg: RunConfig, scorer, items: list[dict], stores: dict[str, JsonlStore], progress: bool) -> None:
    """PURE's numbers and verdict for each item's candidate (one teacher-forced pass each), and S_ref
    for the items that carry their problem's Stage 0 trajectories."""
    from heal.engines.base import chat_prompt_ids, stop_ids

    name = scorer_name(cfg)
    first = items[0]["problem"]  # the scorer must read the teacher's token ids as the same text
    if chat_prompt_ids(scorer.tokenizer, first["prompt"], cfg.prompt.system) != first["prompt_ids"]:
        raise ValueError(f"scorer {name} tokenizes the prompt differently from the teacher: PURE needs a scorer "
                         f"that shares the teacher's tokenizer")
    stop = stop_ids(scorer)
    fmt = reasoning.resolve(cfg.teacher.reasoning, scorer.tokenizer)
    refs: dict[str, float | None] = {}
    bar = progress_bar(len(items), 0, "filter", "cand", progress)
    for it in items:
        pid, prob, c = it["problem_id"], it["problem"], it["candidate"]
        if it["trajectories"] is not None:
            refs[pid] = reference_nll(scorer, prob["prompt_ids"], it["trajectories"], stop, fmt)
            stores[REFERENCES].append([{"key": reference_key(name, pid), "S_ref": refs[pid],
                                        "n_trajectories": len(it["trajectories"])}])
        s_ref = refs[pid] if pid in refs else it["s_ref"]
        pre = prefilter(c["continuation"], prob["answer"], cfg.pure)
        scores = score_candidate(scorer, prob["prompt_ids"], c["training_ids"], hint_free_start(c),
                                 prob["answer"], s_ref, stop, cfg.pure.eps, fmt)
        rec = {"key": c["key"], "problem_id": pid, "kind": c["kind"], "prefilter": pre, **scores,
               "correct": c["correct"], "derivation_ok": c["derivation_ok"], "restart": c.get("restart", True),
               "scorer": name}
        ok, why = verdict(rec, cfg.pure)
        rec.update(accepted=ok, reason=why, score=cfg.pure.score, threshold=cfg.pure.threshold)
        stores[STORE].append([rec])
        bar.update(1)
    bar.close()


def summarize_filter(run_dir: Path, cfg: RunConfig) -> dict:
    path = Path(run_dir) / STORE
    recs = list(read_records(path, SCORED)) if path.exists() else []
    out: dict = {"score": cfg.pure.score, "threshold": cfg.pure.threshold}
    for kind in ("repair", "guided"):
        rs = [r for r in recs if r["kind"] == kind]
        acc = [r for r in rs if verdict(r, cfg.pure)[0]]
        out[kind] = {"candidates": len(rs), "accepted": len(acc),
                     "accepted_verified": sum(r["derivation_ok"] for r in acc),
                     "rejected_prefilter": sum(bool(r["prefilter"]) for r in rs)}
    return out
