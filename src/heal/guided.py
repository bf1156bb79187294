"""Answer-guided (STaR-style rationalisation) sampling for `hard` and `corner` problems (`heal hint`).

The teacher sees the question with the answer as a hint and writes m solutions. Every sample is
kept with its verdict; the training completion is stored against the hint-free prompt (the one in
problems.jsonl), so the student never sees the hint. PURE decides which ones form D2.

Artifact: guided.jsonl, one record per sample (key "<problem_id>/guided/<j>").
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm.auto import tqdm

from heal import reasoning
from heal.config import RunConfig, echo_config
from heal.rundir import writes_run
from heal.engines import engine_for
from heal.engines.base import chat_prompt_ids
from heal.entropy import step_spans_from_pieces, token_pieces
from heal.gear import step_texts, strip_stop
from heal.sample import load_stage0, sampling_params, stable_seed
from heal.stepcheck import check_steps
from heal.store import JsonlStore
from heal.verify import Verifier


@writes_run("hint")
def run_guided(cfg: RunConfig, engine=None, progress: bool = True, log=print) -> dict:
    run_dir = Path(cfg.output_dir)
    problems, _, tiers = load_stage0(run_dir)
    echo_config(cfg, run_dir)
    gc = cfg.guided
    targets = [pid for pid, t in tiers.items() if t["tier"] in gc.tiers]
    store = JsonlStore(run_dir / "guided.jsonl")
    todo = [(pid, j) for pid in targets for j in range(gc.samples) if f"{pid}/guided/{j}" not in store]
    log(f"hint: {len(targets)} problems in tiers {gc.tiers}, {len(todo)} answer-guided samples to draw")
    with engine_for(cfg.teacher, engine) as engine:
        params = sampling_params(cfg)
        stop = set(getattr(engine, "eos", [])) | set(params.stop_token_ids)
        fmt = reasoning.resolve(cfg.teacher.reasoning, engine.tokenizer)
        bar = tqdm(total=len(targets) * gc.samples, initial=len(targets) * gc.samples - len(todo), unit="sample",
                   desc="hint", disable=not progress)
        t0, n_tok = time.time(), 0
        with Verifier(cfg.verify.method, cfg.verify.timeout_s) as verifier:
            chunk = max(1, getattr(engine, "batch_size", 1))
            for start in range(0, len(todo), chunk):
                items = todo[start : start + chunk]
                hinted = []
                for pid, _ in items:
                    p = problems[pid]
                    text = gc.template.format(question=p["question"], answer=p["answer"])
                    hinted.append(chat_prompt_ids(engine.tokenizer, text, cfg.prompt.system, fmt.template_kwargs))
                seeds = [stable_seed(params.seed, pid, "guided") + j for pid, j in items]
                comps = engine.generate(hinted, params, n=1, record_entropy=False, seeds=seeds)
                records = []
                for (pid, j), hinted_ids, [c] in zip(items, hinted, comps):
                    p = problems[pid]
                    v = verifier.check(reasoning.answer_text(c.text, fmt) or "", p["answer"], p.get("meta"))
                    ids, _ = strip_stop(c.token_ids, None, stop)
                    pieces = token_pieces(engine.tokenizer, ids)
                    check = check_steps(step_texts(pieces, step_spans_from_pieces(pieces)), p["answer"], p["question"])
                    n_tok += len(c.token_ids)
                    records.append({
                        "key": f"{pid}/guided/{j}", "problem_id": pid, "stage": "guided", "kind": "guided",
                        "answer": p["answer"], "hinted_prompt_ids": hinted_ids,
                        "continuation_ids": c.token_ids, "continuation": c.text,
                        "training_ids": c.token_ids, "training_text": c.text, "cut_token": 0, "replaced_span": [0, 0],
                        "finish_reason": c.finish_reason, "truncated": c.truncated, "n_tokens": len(c.token_ids),
                        "seed": c.seed, "pred": v.pred, "correct": v.correct, "verify_error": v.error,
                        "step_check": check.to_dict(), "derivation_ok": bool(v.correct) and check.ok,
                        "model": cfg.teacher.model, "engine": engine.name,
                    })
                store.append(records)
                bar.update(len(records))
                bar.set_postfix_str(f"{n_tok / max(time.time() - t0, 1e-9):.1f} tok/s")
        bar.close()
    recs = list(store)
    return {"samples": len(recs), "answer_correct": sum(bool(r["correct"]) for r in recs),
            "derivation_verified": sum(r["derivation_ok"] for r in recs),
            "problems": len(targets), "teacher_tokens": sum(r["n_tokens"] for r in recs)}
