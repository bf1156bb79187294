"""Answer-guided (STaR-style rationalisation) sampling for `hard` and `corner` problems (`heal hint`).

The teacher sees the question with the answer as a hint and writes m solutions. Every sample is
kept with its verdict; the training completion is stored against the hint-free prompt (the one in
problems.jsonl), so the student never sees the hint. PURE decides which ones form D2.

Artifact: guided.jsonl, one record per sample (key "<problem_id>/guided/<j>").
"""

from __future__ import annotations

from pathlib import Path

from heal import reasoning
from heal.config import RunConfig, echo_config
from heal.engines.base import chat_prompt_ids, stop_ids
from heal.entropy import step_spans_from_pieces, token_pieces
from heal.gear import step_texts, strip_stop
from heal.records import CANDIDATE, guided_key, read_records
from heal.rundir import writes_run
from heal.runs import Job, dispatch, generate, load_stage0, merge_shards, sampling_params, stable_seed
from heal.stepcheck import check_steps
from heal.store import JsonlStore
from heal.verify import Verifier

STORE = "guided.jsonl"


@writes_run("hint")
def run_guided(cfg: RunConfig, engine=None, progress: bool = True, log=print) -> dict:
    run_dir = Path(cfg.output_dir)
    problems, _, tiers = load_stage0(run_dir)
    echo_config(cfg, run_dir)
    gc = cfg.guided
    targets = [pid for pid, t in tiers.items() if t["tier"] in gc.tiers]
    merge_shards(run_dir, [STORE], log)
    store = JsonlStore(run_dir / STORE)
    todo = [{"problem_id": pid, "j": j, **{k: problems[pid].get(k) for k in ("question", "answer", "meta")}}
            for pid in targets for j in range(gc.samples) if guided_key(pid, j) not in store]
    log(f"hint: {len(targets)} problems in tiers {gc.tiers}, {len(todo)} answer-guided samples to draw")
    dispatch(cfg, cfg.teacher, guided_work, todo, run_dir, (STORE,), engine=engine, progress=progress, log=log)
    recs = list(read_records(run_dir / STORE, CANDIDATE)) if (run_dir / STORE).exists() else []
    return {"samples": len(recs), "answer_correct": sum(bool(r["correct"]) for r in recs),
            "derivation_verified": sum(r["derivation_ok"] for r in recs),
            "problems": len(targets), "teacher_tokens": sum(r["n_tokens"] for r in recs)}


def guided_work(cfg: RunConfig, engine, items: list[dict], stores: dict[str, JsonlStore], progress: bool) -> None:
    """One answer-guided sample per item (a problem and an index j): the question with its answer as
    a hint, verified and step-checked; the record's training completion is the sample itself."""
    params = sampling_params(cfg)
    stop = stop_ids(engine, params)
    fmt = reasoning.resolve(cfg.teacher.reasoning, engine.tokenizer)
    jobs = [Job(chat_prompt_ids(engine.tokenizer, cfg.guided.template.format(question=it["question"], answer=it["answer"]),
                                cfg.prompt.system, fmt.template_kwargs),
                stable_seed(params.seed, it["problem_id"], "guided") + it["j"], it) for it in items]

    def build(job: Job, comps) -> list[dict]:
        it, [c] = job.data, comps
        v = verifier.check(reasoning.answer_text(c.text, fmt) or "", it["answer"], it.get("meta"))
        ids, _ = strip_stop(c.token_ids, None, stop)
        pieces = token_pieces(engine.tokenizer, ids)
        check = check_steps(step_texts(pieces, step_spans_from_pieces(pieces)), it["answer"], it["question"])
        return [{
            "key": guided_key(it["problem_id"], it["j"]), "problem_id": it["problem_id"], "stage": "guided",
            "kind": "guided", "answer": it["answer"], "hinted_prompt_ids": job.prompt_ids,
            "continuation_ids": c.token_ids, "continuation": c.text,
            # no prefix and no hint span: the training completion is the sample as the teacher wrote it
            "training_ids": c.token_ids, "training_text": c.text,
            "finish_reason": c.finish_reason, "truncated": c.truncated, "n_tokens": len(c.token_ids),
            "seed": c.seed, "pred": v.pred, "correct": v.correct, "verify_error": v.error,
            "step_check": check.to_dict(), "derivation_ok": bool(v.correct) and check.ok,
            "model": cfg.teacher.model, "engine": engine.name,
        }]

    with Verifier(cfg.verify.method, cfg.verify.timeout_s) as verifier:
        generate(engine, jobs, params, build, stores[STORE], desc="hint", unit="sample", progress=progress)
