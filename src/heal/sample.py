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

import hashlib
import json
import time
from dataclasses import asdict
from collections import Counter, defaultdict
from pathlib import Path

from tqdm.auto import tqdm

from heal.config import RunConfig, echo_config
from heal.engines import engine_for
from heal.engines.base import SamplingParams, chat_prompt_ids, check_prompts_fit
from heal import reasoning
from heal.problems import Problem, from_config
from heal.rundir import (PINNED_SECTIONS, RunMismatch, changed_settings,  # noqa: F401  (RunMismatch re-exported)
                         pinned_settings, writes_run)
from heal.store import JsonlStore, atomic_write_jsonl, atomic_write_text, pack_f16, read_jsonl, read_store
from heal.verify import Verifier, check_gold


def stable_seed(base: int, *parts: object) -> int:
    """A per-item seed that does not depend on run order (so a resumed run draws the same samples)."""
    h = hashlib.sha256("/".join([str(base), *map(str, parts)]).encode()).hexdigest()
    return int(h[:8], 16) % (2**31 - 1024)


def sampling_params(cfg: RunConfig) -> SamplingParams:
    s = cfg.sampling
    return SamplingParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                          max_new_tokens=s.max_new_tokens, seed=s.seed)


def tier_of(n_correct: int, k: int, solved_min_pass: float = 0.5, corner_max_correct: int = 1) -> str:
    """solved: pass rate >= solved_min_pass; corner: at most corner_max_correct correct (and not
    solved, which only matters for tiny K); hard: everything in between."""
    if k > 0 and n_correct / k >= solved_min_pass:
        return "solved"
    if n_correct <= corner_max_correct:
        return "corner"
    return "hard"


def load_run_problems(cfg: RunConfig, problems: list[Problem] | None, log) -> list[Problem]:
    """The config's problems, loaded and checked before any model loads (a bad file, field or gold
    answer is reported without waiting for the teacher)."""
    skipped: list[str] = []
    problems = problems if problems is not None else from_config(cfg.data, skipped=skipped)
    problems = check_gold(problems, cfg.verify.method, cfg.verify.timeout_s, cfg.data.on_error, skipped)
    if skipped:
        log(f"skipped {len(skipped)} malformed problem record(s):")
        for msg in skipped[:20]:
            log(f"  {msg}")
    if not problems:
        raise ValueError(f"no problems loaded from {cfg.data.source}")
    return problems


def _prepare_problems(cfg: RunConfig, run_dir: Path, tokenizer, problems: list[Problem], log) -> list[dict]:
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


def _check_config(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse to mix samples drawn under different teacher/prompt/sampling settings in one store.

    The settings Stage 0 sampled with are kept in RUN/sample_config.json, written once with the
    first sample (config.yaml is rewritten by every stage, so a later `heal train --set ...` must not
    move the reference). Runs from before that file fall back to config.yaml."""
    new = cfg.model_dump(mode="json")
    sampled = (run_dir / "samples.jsonl").exists() and (run_dir / "samples.jsonl").stat().st_size > 0
    old = pinned_settings(run_dir)
    if old is not None and sampled:
        if diff := changed_settings(old, new, PINNED_SECTIONS):
            raise RunMismatch(f"{run_dir} was sampled with different settings ({', '.join(diff)}); "
                              f"use another output_dir to sample with the new ones")
    ref = run_dir / "sample_config.json"
    if not ref.exists() or not sampled:
        atomic_write_text(ref, json.dumps({s: new[s] for s in PINNED_SECTIONS}, indent=2) + "\n")


def summarize(cfg: RunConfig, run_dir: Path, problems: list[dict]) -> dict:
    """Derive tiers.jsonl and sample_summary.json from the store (always recomputable)."""
    k = cfg.sample.k
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for rec in read_store(run_dir / "samples.jsonl"):
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
    With `launcher.kind: ray` the problems are sharded over Ray workers (heal.launch)."""
    if cfg.launcher.kind == "ray" and engine is None:
        from heal.launch import ray_sample

        return ray_sample(cfg, problems, progress, log)
    run_dir = Path(cfg.output_dir)
    _check_config(cfg, run_dir)
    problems = load_run_problems(cfg, problems, log)
    echo_config(cfg, run_dir)
    with engine_for(cfg.teacher, engine) as engine:
        rows = _prepare_problems(cfg, run_dir, engine.tokenizer, problems, log)
        check_prompts_fit(engine, [(r["id"], r["prompt_ids"]) for r in rows], cfg.sampling.max_new_tokens)
        store = JsonlStore(run_dir / "samples.jsonl")
        todo = todo_items(cfg, rows, store)
        if len(store):
            log(f"resuming: {len(store)} samples already in {store.path}, {len(todo)} to go")
        sample_items(cfg, engine, todo, store, total=len(rows) * cfg.sample.k, progress=progress)
    return summarize(cfg, run_dir, rows)


def todo_items(cfg: RunConfig, rows: list[dict], store: JsonlStore) -> list[tuple[dict, int]]:
    """(problem row, sample index) pairs not yet in the store."""
    return [(r, j) for r in rows for j in range(cfg.sample.k) if f"{r['id']}/{j}" not in store]


def sample_items(cfg: RunConfig, engine, todo: list[tuple[dict, int]], store: JsonlStore, total: int | None = None,
                 progress: bool = True) -> None:
    """Generate, verify and append one record per (problem, j). Each sample's seed depends only on its
    problem and index, so the same sample comes out whichever worker or run draws it."""
    params = sampling_params(cfg)
    fmt = reasoning.resolve(cfg.teacher.reasoning, engine.tokenizer)
    chunk = max(1, getattr(engine, "batch_size", 1))
    total = total or len(todo)
    bar = tqdm(total=total, initial=total - len(todo), unit="sample", desc="sample", disable=not progress,
               dynamic_ncols=True)
    t0, n_tok, n_new = time.time(), 0, 0
    with Verifier(cfg.verify.method, cfg.verify.timeout_s) as verifier:
        for start in range(0, len(todo), chunk):
            items = todo[start : start + chunk]
            seeds = [stable_seed(params.seed, r["id"]) + j for r, j in items]
            comps = engine.generate([r["prompt_ids"] for r, _ in items], params, n=1,
                                    record_entropy=cfg.sample.record_entropy, seeds=seeds)
            records = []
            for (r, j), [c] in zip(items, comps):
                span = reasoning.spans(c.token_ids, engine.tokenizer, fmt)
                # The final answer is read after the reasoning block; a block that never closed has none.
                v = verifier.check(reasoning.answer_text(c.text, fmt) or "", r["answer"], r.get("meta"))
                records.append({
                    "key": f"{r['id']}/{j}", "problem_id": r["id"], "sample_index": j, "stage": "sample",
                    "text": c.text, "token_ids": c.token_ids, "n_tokens": len(c.token_ids),
                    "finish_reason": c.finish_reason, "truncated": c.truncated,
                    "logprobs": pack_f16(c.logprobs), "entropy": pack_f16(c.entropy), "entropy_kind": c.entropy_kind,
                    "pred": v.pred, "extraction": v.extraction, "correct": v.correct, "verify_error": v.error,
                    "seed": c.seed, "model": cfg.teacher.model, "engine": engine.name,
                    "sampling": asdict(params),
                    **(span.to_dict() | {"truncated_in_reasoning": c.truncated and not span.closed}
                       if fmt.enabled else {}),
                })
                n_tok += len(c.token_ids)
            store.append(records)
            bar.update(len(records))
            n_new += len(records)
            dt = max(time.time() - t0, 1e-9)
            bar.set_postfix_str(f"{n_new / dt:.2f} samples/s, {n_tok / dt:.1f} tok/s")
    bar.close()


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


def load_stage0(run_dir: str | Path) -> tuple[dict[str, dict], dict[str, list[dict]], dict[str, dict]]:
    """(problems by id, Stage 0 samples by problem id, tier rows by problem id) of a run."""
    run_dir = Path(run_dir)
    for name in ("problems.jsonl", "samples.jsonl", "tiers.jsonl"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir / name} is missing: run `heal sample` on this run first")
    problems = {r["id"]: r for r in read_jsonl(run_dir / "problems.jsonl")}
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for r in read_store(run_dir / "samples.jsonl"):
        by_problem[r["problem_id"]].append(r)
    tiers = {r["problem_id"]: r for r in read_jsonl(run_dir / "tiers.jsonl")}
    return problems, by_problem, tiers
