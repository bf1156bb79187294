"""GEAR: Guided Entropy-Assisted Repair of failed teacher trajectories (`heal repair`).

For each problem of the configured tiers (default: `corner`): take up to M failed, untruncated
trajectories (distinct wrong answers first), find the entropy surge, back up, append a hindsight
hint carrying the answer to the kept prefix (token ids, never re-tokenised), and let the teacher
continue N times from prefix + hint. Each continuation is verified, step-checked, and turned into
the training completion prefix + reflection + continuation (the hint span replaced).

Artifact: repairs.jsonl, one record per continuation (key "<source key>/gear/<c>").
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path


from heal import reasoning
from heal.config import RunConfig, echo_config
from heal.records import CANDIDATE, read_records, repair_key, repair_source
from heal.rundir import writes_run
from heal.engines.base import stop_ids
from heal.entropy import step_means, step_spans_from_pieces, surges, token_pieces
from heal.hints import render, text_ids, training_ids
from heal.locate import locate
from heal.runs import Job, dispatch, generate, load_stage0, merge_shards, sampling_params, stable_seed
from heal.stepcheck import check_steps
from heal.store import JsonlStore
from heal.verify import Verifier

STORE = "repairs.jsonl"


def select_failed(samples: list[dict], m: int, skip_truncated: bool = True) -> list[dict]:
    """Up to m failed trajectories, round-robin over distinct wrong answers (most frequent first)."""
    failed = [s for s in samples if s["correct"] is False and not (skip_truncated and s["truncated"])]
    groups: dict[str | None, list[dict]] = defaultdict(list)
    for s in sorted(failed, key=lambda s: s["sample_index"]):
        groups[s["pred"]].append(s)
    order = sorted(groups.values(), key=lambda g: (-len(g), g[0]["sample_index"]))
    out: list[dict] = []
    while len(out) < m and any(order):
        for g in order:
            if g and len(out) < m:
                out.append(g.pop(0))
    return out


def strip_stop(token_ids: list[int], values: list[float] | None, stop: set[int]):
    """Drop the end-of-turn token: steps and cuts live inside the text."""
    if token_ids and token_ids[-1] in stop:
        return token_ids[:-1], (values[:-1] if values is not None else None)
    return token_ids, values


def plan_cut(traj_ids: list[int], entropy: list[float], tokenizer, gear_cfg, **locate_args) -> dict:
    """Steps, step entropies, surges, the locator's breakpoint and cut of one trajectory (all
    recorded). `locate_args`: what heal.locate.locate needs beyond the entropy (the step checker's
    answer and question, a seed, and for rollout/judge the engine, prompt and verifier)."""
    pieces = token_pieces(tokenizer, traj_ids)
    spans = step_spans_from_pieces(pieces)
    bp, info = locate(gear_cfg.locator, entropy=entropy, spans=spans, pieces=pieces, gear_cfg=gear_cfg,
                      steps=step_texts(pieces, spans), traj_ids=traj_ids, **locate_args)
    h = step_means(entropy, spans)
    return {"spans": spans, "step_entropy": h.round(5).tolist(), "surges": surges(h).round(5).tolist(),
            "breakpoint": bp.to_dict(), "pieces": pieces, "locator": info}


def shift_plan(plan: dict, offset: int) -> dict:
    """A plan made on trajectory[offset:] (a reasoning block's content) in the trajectory's positions."""
    if offset == 0:
        return plan
    bp = dict(plan["breakpoint"])
    bp["cut_token"] += offset
    bp["token"] += offset
    return {**plan, "spans": [(a + offset, b + offset) for a, b in plan["spans"]], "breakpoint": bp}


def step_texts(pieces: list[str], spans) -> list[str]:
    return ["".join(pieces[a:b]) for a, b in spans]


@writes_run("repair")
def run_repair(cfg: RunConfig, engine=None, progress: bool = True, log=print,
               problem_ids: list[str] | None = None) -> dict:
    """GEAR on every problem of the configured tiers (or only on `problem_ids` among them)."""
    run_dir = Path(cfg.output_dir)
    problems, by_problem, tiers = load_stage0(run_dir)
    echo_config(cfg, run_dir)
    g = cfg.gear
    targets = [pid for pid, t in tiers.items() if t["tier"] in g.tiers and (problem_ids is None or pid in problem_ids)]
    merge_shards(run_dir, [STORE], log)  # also drops a half-written last line
    # One pass over what earlier runs wrote: the sources already repaired, and the restarts'
    # continuations. Restarts of one problem share one hinted prompt: identical continuations across
    # its sources are duplicates too (kept in the store, flagged, never counted or trained on); they
    # go with the problem's items to whichever worker repairs it.
    done_sources: set[str] = set()
    restarts: dict[str, list] = defaultdict(list)
    path = run_dir / STORE
    for r in read_records(path, CANDIDATE) if path.exists() else []:
        done_sources.add(repair_source(r["key"]))
        if r.get("restart"):
            restarts[r["problem_id"]].append(r["continuation_ids"])
    sources = {pid: select_failed(by_problem.get(pid, []), g.max_trajectories, g.skip_truncated) for pid in targets}
    todo = [{"problem_id": pid, "problem": problems[pid], "source": s, "seen": restarts.get(pid, [])}
            for pid in targets for s in sources[pid] if s["key"] not in done_sources]
    n_sources = sum(len(v) for v in sources.values())
    log(f"repair: {len(targets)} problems in tiers {g.tiers}, {n_sources} failed trajectories, {len(todo)} to repair")
    dispatch(cfg, cfg.teacher, repair_work, todo, run_dir, (STORE,), engine=engine,
             total=n_sources * g.continuations, progress=progress, log=log)
    return summarize_repairs(run_dir)


def repair_work(cfg: RunConfig, engine, items: list[dict], stores: dict[str, JsonlStore], progress: bool) -> None:
    """GEAR on each item's failed trajectory: locate the breakpoint, cut, hint, N continuations, each
    verified and step-checked, written as N records."""
    g = cfg.gear
    params = sampling_params(cfg)
    stop = stop_ids(engine, params)
    fmt = reasoning.resolve(cfg.teacher.reasoning, engine.tokenizer)
    seen_by_problem = {it["problem_id"]: {tuple(ids) for ids in it["seen"]} for it in items}
    hint_ids = lambda text: text_ids(engine.tokenizer, text)  # noqa: E731
    reflection = hint_ids(g.reflection)

    def jobs():  # planned lazily, a chunk just before its continuations (rollout/judge use the engine)
        for it in items:
            prob, s = it["problem"], it["source"]
            traj, ent = strip_stop(s["token_ids"], s.get("entropy"), stop)
            scored_entropy = ent is None
            if scored_entropy:  # not recorded while sampling: one teacher-forced pass
                ent = engine.score(prob["prompt_ids"], traj).entropy
            t_loc = time.time()
            # A reasoning trace is cut inside its reasoning block: steps, entropy, surges and the
            # window are those of the block's content [r0, r1); token positions are shifted back.
            r0, r1 = reasoning.spans(traj, engine.tokenizer, fmt).reasoning if fmt.enabled else (0, len(traj))
            plan = plan_cut(traj[r0:r1], ent[r0:r1], engine.tokenizer, g, answer=prob["answer"],
                            question=prob["question"],
                            source_seed=stable_seed(g.locator_seed, s["key"], "locator"), engine=engine,
                            prompt_ids=prob["prompt_ids"] + traj[:r0], params=params,
                            verify=lambda text: verifier.check(reasoning.answer_text(text, fmt) or "",
                                                               prob["answer"], prob.get("meta")).correct)
            cut_in_block = plan["breakpoint"]["cut_token"]
            plan = shift_plan(plan, r0)
            loc = plan["locator"]
            if scored_entropy and (g.locator == "entropy" or loc["fallback"]):
                loc["cost"]["forced"] += len(traj)
            loc["seconds"] = round(time.time() - t_loc, 2)
            prefix = traj[: plan["breakpoint"]["cut_token"]]
            hint_text = render(g.hint_template, prob["answer"])
            hint = hint_ids(hint_text)
            # Every kept token is checked, a partial step kept by a token-level cut included.
            prefix_steps = ["".join(plan["pieces"][a - r0:min(b, r0 + cut_in_block) - r0])
                            for a, b in plan["spans"] if a < r0 + cut_in_block]
            yield Job(prob["prompt_ids"] + prefix + hint, stable_seed(params.seed, s["key"], "gear"),
                      dict(it, traj=traj, plan=plan, prefix=prefix, hint=hint, hint_text=hint_text,
                           prefix_steps=prefix_steps, r=(r0, r1)))

    def build(job: Job, conts) -> list[dict]:
        d = job.data
        prob, s, plan, prefix, hint = d["problem"], d["source"], d["plan"], d["prefix"], d["hint"]
        bp = plan["breakpoint"]
        # A restart has nothing to reflect on: its training text is the continuation alone.
        mode = "strip" if bp["restart"] and g.hint_mode == "reflection" else g.hint_mode
        seen = seen_by_problem.setdefault(d["problem_id"], set()) if bp["restart"] else set()
        records = []
        for c_idx, c in enumerate(conts):
            v = verifier.check(reasoning.answer_text(c.text, fmt) or "", prob["answer"], prob.get("meta"))
            train, replaced = training_ids(prefix, hint, c.token_ids, mode, reflection)
            cont_ids, _ = strip_stop(c.token_ids, None, stop)
            cont_pieces = token_pieces(engine.tokenizer, cont_ids)
            cont_steps = step_texts(cont_pieces, step_spans_from_pieces(cont_pieces))
            check_cont = check_steps(cont_steps, prob["answer"], prob["question"])
            check_all = check_steps(d["prefix_steps"] + cont_steps, prob["answer"], prob["question"])
            duplicate = tuple(c.token_ids) in seen
            seen.add(tuple(c.token_ids))
            records.append({
                "key": repair_key(s["key"], c_idx), "problem_id": d["problem_id"], "stage": "gear", "kind": "repair",
                "source_key": s["key"], "source_pred": s["pred"], "answer": prob["answer"],
                "n_source_tokens": len(d["traj"]), "step_spans": plan["spans"], "step_entropy": plan["step_entropy"],
                "surges": plan["surges"], "breakpoint": bp, "window": g.window, "backup": g.backup,
                "reasoning_span": list(d["r"]) if fmt.enabled else None,
                # Per source trajectory (repeated on each of its continuations, counted once).
                "locator": g.locator, "locator_info": plan["locator"],
                "cut_token": bp["cut_token"], "restart": bp["restart"],
                "hint_text": d["hint_text"], "hint_span": [len(prefix), len(prefix) + len(hint)],
                "continuation_ids": c.token_ids, "continuation": c.text, "finish_reason": c.finish_reason,
                "truncated": c.truncated, "n_tokens": len(c.token_ids), "seed": c.seed,
                "pred": v.pred, "correct": v.correct, "verify_error": v.error,
                "hint_mode": mode, "replaced_span": list(replaced), "training_ids": train,
                "training_text": engine.tokenizer.decode(train, skip_special_tokens=True),
                "step_check": check_all.to_dict(), "step_check_continuation": check_cont.to_dict(),
                "derivation_ok": bool(v.correct) and check_all.ok, "duplicate": duplicate,
                "model": cfg.teacher.model, "engine": engine.name,
            })
        return records

    with Verifier(cfg.verify.method, cfg.verify.timeout_s) as verifier:
        # whole sources a call (a source's N continuations share its prompt cache), as many as fill
        # the engine's batch: one source alone left half of llama.cpp's 8 slots idle
        chunk = max(1, (getattr(engine, "batch_size", 1) or 1) // g.continuations)
        generate(engine, jobs(), params, build, stores[STORE], n=g.continuations, chunk=chunk,
                 desc="repair", unit="cont", total=len(items) * g.continuations, progress=progress)


def summarize_repairs(run_dir: Path, problem_ids: list[str] | None = None) -> dict:
    """Yield counts of a run's repairs (duplicates excluded, but their tokens counted as spent)."""
    path = Path(run_dir) / STORE
    every = [r for r in (read_records(path, CANDIDATE) if path.exists() else []) if problem_ids is None or r["problem_id"] in problem_ids]
    recs = [r for r in every if not r.get("duplicate")]
    by_src: dict[str, list[dict]] = defaultdict(list)
    for r in recs:
        by_src[r["source_key"]].append(r)
    by_prob: dict[str, list[dict]] = defaultdict(list)
    for r in recs:
        by_prob[r["problem_id"]].append(r)
    out = {
        "continuations": len(recs),
        "answer_correct": sum(bool(r["correct"]) for r in recs),
        "derivation_verified": sum(r["derivation_ok"] for r in recs),
        "trajectories": len(by_src),
        "trajectories_answer_repaired": sum(any(r["correct"] for r in v) for v in by_src.values()),
        "trajectories_verified_repaired": sum(any(r["derivation_ok"] for r in v) for v in by_src.values()),
        "problems": len(by_prob),
        "problems_answer_repaired": sum(any(r["correct"] for r in v) for v in by_prob.values()),
        "problems_verified_repaired": sum(any(r["derivation_ok"] for r in v) for v in by_prob.values()),
        "restarts": sum(v[0]["restart"] for v in by_src.values()),
        "problems_all_restarts": sum(all(r["restart"] for r in v) for v in by_prob.values()),
        "duplicates": len(every) - len(recs),
        "teacher_tokens": sum(r["n_tokens"] for r in every),
    }
    # The locator's own cost, once per source trajectory (records before issue 16 carry none: the
    # entropy locator on recorded entropies costs nothing).
    costs = {}
    for r in every:
        costs.setdefault(r["source_key"], r.get("locator_info", {}).get("cost", {"generated": 0, "forced": 0}))
    out["locator_generated_tokens"] = sum(c["generated"] for c in costs.values())
    out["locator_forced_tokens"] = sum(c["forced"] for c in costs.values())
    out["teacher_tokens_with_locator"] = (out["teacher_tokens"] + out["locator_generated_tokens"]
                                          + out["locator_forced_tokens"])
    return out
