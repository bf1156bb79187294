"""Stage 0: rejection sampling. K teacher samples per problem, each verified; pass rate and tier.

Artifacts in the run directory:
- problems.jsonl   the problem set of this run, with the exact prompt text and token ids (written once)
- samples.jsonl    one record per sample (append-only, key "<problem_id>/<j>"): token ids, text,
                   per-token log-prob and entropy, extracted answer, correctness, provenance
- tiers.jsonl      per problem: n, correct, pass rate, tier, truncations, verifier errors (derived)
- sample_summary.json  totals and tier counts (derived)
An interrupted run resumes where it stopped: samples already in the store are skipped.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from collections import Counter, defaultdict
from pathlib import Path

from heal.config import RunConfig, echo_config
from heal.engines.base import check_prompts_fit, chat_prompt_ids
from heal import reasoning
from heal.problems import Problem, from_config
from heal.records import SAMPLE, read_records, sample_key
from heal.rundir import PINNED_SECTIONS, RunMismatch, check_settings, sections, writes_run
from heal.runs import (Job, dispatch, generate, local_engine, load_tokenizer, merge_shards,
                       sampling_params, stable_seed, tier_of)
from heal.store import JsonlStore, atomic_write_jsonl, atomic_write_text, pack_f16, read_jsonl
from heal.verify import Verifier, check_gold

STORE = "samples.jsonl"


def load_run_problems(cfg: RunConfig, problems: list[Problem] | None, log) -> list[Problem]:
    """The config's problems, loaded and checked before any model loads (a bad file, field or gold
    answer is reported without waiting for the teacher). `problems` given: already loaded and
    checked by this function (heal run loads them once, before the teacher)."""
    if problems is not None:
        if not problems:
            raise ValueError("no problems given")
        return problems
    skipped: list[str] = []
    problems = check_gold(from_config(cfg.data, skipped=skipped), cfg.verify.method, cfg.verify.timeout_s,
                          cfg.data.on_error, skipped)
    if skipped:
        log(f"skipped {len(skipped)} malformed problem record(s):")
        for msg in skipped[:20]:
            log(f"  {msg}")
    if not problems:
        raise ValueError(f"no problems loaded from {cfg.data.source}")
    return problems


def prepare_problems(cfg: RunConfig, run_dir: Path, tokenizer, problems: list[Problem], log) -> list[dict]:
    """The run's problems with prompt ids; on resume, the stored set must match."""
    path = run_dir / "problems.jsonl"
    rows = []
    fmt = reasoning.resolve(cfg.teacher.reasoning, tokenizer)
    for p in problems:
        text = cfg.prompt.template.format(question=p.question)
        ids = chat_prompt_ids(tokenizer, text, cfg.prompt.system, fmt.template_kwargs)
        rows.append({**p.to_dict(), "prompt": text, "prompt_ids": ids})
    if path.exists():
        old = list(read_jsonl(path))
        if [(r["id"], r["question"], r["prompt_ids"]) for r in old] != [(r["id"], r["question"], r["prompt_ids"]) for r in rows]:
            raise RunMismatch(
                f"{path} holds a different problem set or prompt than this config produces; "
                f"use another output_dir (or delete {run_dir}) to start over"
            )
        return old
    atomic_write_jsonl(path, rows)
    return rows


def pin_settings(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse to mix samples drawn under different teacher/prompt/sampling settings in one store.

    The settings Stage 0 sampled with are kept in RUN/sample_config.json, written once with the
    first sample (config.yaml is rewritten by every stage, so a later `heal train --set ...` must not
    move the reference). Runs from before that file fall back to config.yaml."""
    check_settings(run_dir / "sample_config.json", sections(cfg, PINNED_SECTIONS), run_dir / STORE, "sampled",
                   fallback=run_dir / "config.yaml")


def summarize(cfg: RunConfig, run_dir: Path, problems: list[dict]) -> dict:
    """Derive tiers.jsonl and sample_summary.json from the store (always recomputable)."""
    k = cfg.sample.k
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for rec in read_records(run_dir / STORE, SAMPLE):
        # A run sampled with a larger K keeps its extra samples on disk; K = k reads the first k.
        if rec["sample_index"] < k:
            by_problem[rec["problem_id"]].append(rec)
    tiers, counts = [], Counter()
    total = Counter()
    for p in problems:
        recs = by_problem.get(p["id"], [])
        n_correct = sum(1 for r in recs if r["correct"] is True)
        row = {
            "problem_id": p["id"], "answer": p["answer"], "n": len(recs), "correct": n_correct,
            "pass_rate": n_correct / len(recs) if recs else None,
            "truncated": sum(1 for r in recs if r["truncated"]),
            "truncated_in_reasoning": sum(1 for r in recs if r.get("truncated_in_reasoning")),
            "verify_errors": sum(1 for r in recs if r["correct"] is None),
            "no_answer": sum(1 for r in recs if r["pred"] is None),
            "tier": tier_of(n_correct, len(recs), cfg.sample.solved_min_pass, cfg.sample.corner_max_correct)
            if len(recs) >= k else "incomplete",
        }
        tiers.append(row)
        counts[row["tier"]] += 1
        for key in ("n", "correct", "truncated", "truncated_in_reasoning", "verify_errors", "no_answer"):
            total[key] += row[key]
        total["tokens"] += sum(r["n_tokens"] for r in recs)
    atomic_write_jsonl(run_dir / "tiers.jsonl", tiers)
    summary = {
        "problems": len(problems), "k": k, "samples": total["n"], "correct": total["correct"],
        "pass_rate": total["correct"] / total["n"] if total["n"] else None,
        "truncation_rate": total["truncated"] / total["n"] if total["n"] else None,
        # a trace cut off before its reasoning block closed: a length failure, never a GEAR source
        "truncated_in_reasoning": total["truncated_in_reasoning"],
        "verify_errors": total["verify_errors"], "no_answer": total["no_answer"],
        "teacher_tokens": total["tokens"],
        "tiers": {t: counts.get(t, 0) for t in ("solved", "hard", "corner", "incomplete")},
    }
    atomic_write_text(run_dir / "sample_summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


@writes_run("sample")
def run_sample(cfg: RunConfig, engine=None, problems: list[Problem] | None = None, progress: bool = True,
               log=print) -> dict:
    """Stage 0 on `cfg`. Pass an engine to reuse a loaded model; otherwise one is built from cfg.teacher.
    With `launcher.kind: ray` the samples are drawn by Ray workers (heal.runs.dispatch)."""
    run_dir = Path(cfg.output_dir)
    pin_settings(cfg, run_dir)
    problems = load_run_problems(cfg, problems, log)
    echo_config(cfg, run_dir)
    merge_shards(run_dir, [STORE], log)  # what a crashed Ray run left in its shards
    with local_engine(cfg, cfg.teacher, engine) as eng:
        rows = prepare_problems(cfg, run_dir, eng.tokenizer if eng else load_tokenizer(cfg.teacher), problems, log)
        store = JsonlStore(run_dir / STORE)
        todo = [{"problem_id": r["id"], "j": j, "prompt_ids": r["prompt_ids"], "answer": r["answer"],
                 "meta": r.get("meta")} for r in rows for j in range(cfg.sample.k)
                if sample_key(r["id"], j) not in store]
        if len(store):
            log(f"resuming: {len(store)} samples already in {store.path}, {len(todo)} to go")
        dispatch(cfg, cfg.teacher, sample_work, todo, run_dir, (STORE,), engine=eng, progress=progress, log=log)
    return summarize(cfg, run_dir, rows)


def sample_work(cfg: RunConfig, engine, items: list[dict], stores: dict[str, JsonlStore], progress: bool) -> None:
    """Generate, verify and append one record per item (a problem and a sample index j). Each
    sample's seed depends only on its problem and index, so the same sample comes out whichever
    worker or run draws it."""
    params = sampling_params(cfg)
    fmt = reasoning.resolve(cfg.teacher.reasoning, engine.tokenizer)
    # before the first sample, on the engine that draws them (this process's or a Ray worker's)
    check_prompts_fit(engine, [(it["problem_id"], it["prompt_ids"]) for it in items], params.max_new_tokens)
    jobs = [Job(it["prompt_ids"], stable_seed(params.seed, it["problem_id"]) + it["j"], it) for it in items]

    def build(job: Job, comps) -> list[dict]:
        it, [c] = job.data, comps
        span = reasoning.spans(c.token_ids, engine.tokenizer, fmt)
        # The final answer is read after the reasoning block; a block that never closed has none.
        v = verifier.check(reasoning.answer_text(c.text, fmt) or "", it["answer"], it.get("meta"))
        return [{
            "key": sample_key(it["problem_id"], it["j"]), "problem_id": it["problem_id"], "sample_index": it["j"],
            "stage": "sample", "text": c.text, "token_ids": c.token_ids, "n_tokens": len(c.token_ids),
            "finish_reason": c.finish_reason, "truncated": c.truncated,
            "logprobs": pack_f16(c.logprobs), "entropy": pack_f16(c.entropy), "entropy_kind": c.entropy_kind,
            "pred": v.pred, "extraction": v.extraction, "correct": v.correct, "verify_error": v.error,
            "seed": c.seed, "model": cfg.teacher.model, "engine": engine.name, "sampling": asdict(params),
            **(span.to_dict() | {"truncated_in_reasoning": c.truncated and not span.closed} if fmt.enabled else {}),
        }]

    with Verifier(cfg.verify.method, cfg.verify.timeout_s) as verifier:
        generate(engine, jobs, params, build, stores[STORE], record_entropy=cfg.sample.record_entropy,
                 desc="sample", unit="sample", progress=progress)


def format_table(run_dir: str | Path, max_rows: int = 50) -> str:
    """Pass-rate table and tier counts, as plain text."""
    run_dir = Path(run_dir)
    tiers = list(read_jsonl(run_dir / "tiers.jsonl"))
    summary = json.loads((run_dir / "sample_summary.json").read_text())
    lines = [f"{'problem':<28} {'answer':>12} {'correct':>8} {'pass':>6} {'trunc':>6}  tier"]
    for t in tiers[:max_rows]:
        pr = "-" if t["pass_rate"] is None else f"{t['pass_rate']:.2f}"
        lines.append(f"{t['problem_id'][:28]:<28} {str(t['answer'])[:12]:>12} {t['correct']:>4}/{t['n']:<3} {pr:>6} {t['truncated']:>6}  {t['tier']}")
    if len(tiers) > max_rows:
        lines.append(f"... {len(tiers) - max_rows} more in {run_dir / 'tiers.jsonl'}")
    s = summary
    tc = s["tiers"]
    pr = "-" if s["pass_rate"] is None else f"{s['pass_rate']:.3f}"
    tr = "-" if s["truncation_rate"] is None else f"{s['truncation_rate']:.3f}"
    lines += [
        "",
        f"samples {s['samples']} (K={s['k']} x {s['problems']} problems), pass rate {pr}, "
        f"truncated {tr}" + (f" ({s['truncated_in_reasoning']} inside the reasoning block)"
                             if s.get("truncated_in_reasoning") else "")
        + f", no answer {s['no_answer']}, verifier errors {s['verify_errors']}, "
        f"teacher tokens {s['teacher_tokens']}",
        f"tiers: solved {tc['solved']}, hard {tc['hard']}, corner {tc['corner']}"
        + (f", incomplete {tc['incomplete']}" if tc.get("incomplete") else ""),
    ]
    return "\n".join(lines)
