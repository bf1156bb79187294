"""How good is the top-k entropy estimate (what vLLM / OpenAI-compatible servers allow, k <= 20) on
real teacher trajectories, and does GEAR pick the same breakpoint with it as with the exact entropy?

Takes the failed trajectories of a Stage 0 run (default: the GEAR probe's, 1.5B teacher), scores each
once with llama.cpp (full vocabulary), and from the same logits computes the exact entropy and the
top-k estimate for each k. Reports per-token error and, for every window x back-up setting, the share
of trajectories whose breakpoint (and cut) is the same.

    python benchmarks/topk_breakpoints.py --run experiments/runs/gear-probe --limit 80

Writes benchmarks/results/topk-breakpoints-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from heal.engines.llamacpp import LlamaCppEngine
from heal.entropy import find_breakpoint, step_spans_from_pieces, token_pieces
from heal.gear import strip_stop
from heal.models import resolve
from heal.runs import load_stage0

SETTINGS = [("first_third_tokens", 1), ("first_third_tokens", 0), ("first_third_steps", 1),
            ("first_third_steps", 0), ("all", 1), ("all", 0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="experiments/runs/gear-probe")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--k", default="5,10,20")
    ap.add_argument("--limit", type=int, default=80, help="failed trajectories to score")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    ks = [int(x) for x in args.k.split(",")]

    problems, by_problem, _ = load_stage0(args.run)
    failed = [s for pid in by_problem for s in by_problem[pid] if s["correct"] is False and not s["truncated"]]
    failed = failed[: args.limit]
    paths = resolve(args.model)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths.hf)
    eng = LlamaCppEngine(paths.gguf, tokenizer=tok, n_ctx=4096)
    stop = set(eng.eos)
    errs = {k: [] for k in ks}
    bounds_ok = {k: 0 for k in ks}
    n_tokens = 0
    agree = {k: {f"{w}/b{b}": {"breakpoint": 0, "cut": 0} for w, b in SETTINGS} for k in ks}
    t0 = time.time()
    for s in failed:
        ids, _ = strip_stop(s["token_ids"], s["entropy"], stop)
        prompt = problems[s["problem_id"]]["prompt_ids"]
        sc = eng.score(prompt, ids, topk=ks)
        exact = np.array(sc.entropy)
        est = {k: np.array(v) for k, v in sc.entropy_topk.items()}
        n_tokens += len(ids)
        pieces = token_pieces(tok, ids)
        spans = step_spans_from_pieces(pieces)
        ref = {f"{w}/b{b}": find_breakpoint(exact, spans, w, b, pieces) for w, b in SETTINGS}
        for k in ks:
            errs[k].extend((exact - est[k]).tolist())
            bounds_ok[k] += int((est[k] <= exact + 1e-9).all())
            for w, b in SETTINGS:
                bp = find_breakpoint(est[k], spans, w, b, pieces)
                agree[k][f"{w}/b{b}"]["breakpoint"] += int(bp.step == ref[f"{w}/b{b}"].step and bp.token == ref[f"{w}/b{b}"].token)
                agree[k][f"{w}/b{b}"]["cut"] += int(bp.cut_token == ref[f"{w}/b{b}"].cut_token)
    eng.close()
    n = len(failed)
    result = {"model": args.model, "run": args.run, "trajectories": n, "tokens": n_tokens,
              "seconds": round(time.time() - t0, 1), "vocab": len(tok), "per_k": {}}
    for k in ks:
        e = np.array(errs[k])
        result["per_k"][k] = {
            "mean_abs_error_nat": round(float(np.abs(e).mean()), 4),
            "p99_abs_error_nat": round(float(np.quantile(np.abs(e), 0.99)), 4),
            "max_abs_error_nat": round(float(np.abs(e).max()), 4),
            "share_tokens_error_below_0.01": round(float((np.abs(e) < 0.01).mean()), 4),
            "estimate_is_lower_bound_all_tokens": bounds_ok[k] == n,
            "agreement": {key: {m: round(v / n, 3) for m, v in d.items()} for key, d in agree[k].items()},
        }
    print(json.dumps(result, indent=2))
    out = Path(args.out or Path(__file__).parent / "results" / f"topk-breakpoints-{args.model}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
