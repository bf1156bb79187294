"""Cost of GEAR's N continuations with and without prefix-cache sharing, and of PURE scoring.

    python benchmarks/gear_cost.py --model qwen2.5-coder-1.5b --n 4

- shared: one generate(prompt + prefix + hint, n=N) call: the prefix is evaluated once (and, with
  parallel > 1, the N continuations are decoded together);
- independent: N separate calls with the KV cache cleared before each (every call pays the
  prefix again), single stream.
Prefix: a real Stage 0-style teacher trajectory cut after about two thirds of its tokens.
PURE: seconds per candidate for one teacher-forced pass (transformers fp32 and llama.cpp).
Writes benchmarks/results/gear-cost-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from transformers import AutoTokenizer

from heal.engines.base import SamplingParams, chat_prompt_ids
from heal.engines.hf import HFEngine
from heal.engines.llamacpp import LlamaCppEngine
from heal.hints import text_ids
from heal.models import resolve


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    args = ap.parse_args()
    paths = resolve(args.model)
    tok = AutoTokenizer.from_pretrained(paths.hf)
    single = LlamaCppEngine(paths.gguf, tokenizer=tok)
    question = ("State the final answer to the following arithmetic problem: 4211 - 3093 + 8476 - 1990 + 5302 =\n"
                "Please reason step by step, and put your final answer within \\boxed{}.")
    prompt = chat_prompt_ids(tok, question)
    [[traj]] = single.generate([prompt], SamplingParams(temperature=0.0, max_new_tokens=300))
    prefix = traj.token_ids[: 2 * len(traj.token_ids) // 3]
    hinted = prompt + prefix + text_ids(tok, "Wait, let me re-check. I know the final answer must be 12906; "
                                              "let me find where I went wrong and derive it properly.\n\n")
    params = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=5)
    res = {"model": args.model, "n": args.n, "prompt_plus_prefix_tokens": len(hinted)}

    def timed(fn):
        t0 = time.perf_counter()
        comps = fn()
        return sum(len(c.token_ids) for c in comps), time.perf_counter() - t0

    def independent():
        out = []
        for j in range(args.n):
            single.llm.reset()  # forget the cache: this call pays the whole prefix again
            single.llm.n_tokens = 0
            out += single.generate([hinted], params, n=1, seeds=[params.seed + j])[0]
        return out

    for name, fn in [("independent (single stream, cache cleared)", independent),
                     ("shared prefix (single stream)", lambda: (single.llm.reset(), single.generate([hinted], params, n=args.n))[1][0])]:
        toks, dt = timed(fn)
        res[name] = {"tokens": toks, "seconds": round(dt, 2), "tok_per_s": round(toks / dt, 2)}
        print(f"{name:<48} {toks:>5} tok {dt:7.1f}s {toks / dt:6.2f} tok/s", flush=True)
    single.close()
    par = LlamaCppEngine(paths.gguf, tokenizer=tok, parallel=args.parallel)
    name = f"shared prefix (parallel={args.parallel})"
    toks, dt = timed(lambda: par.generate([hinted], params, n=args.n)[0])
    res[name] = {"tokens": toks, "seconds": round(dt, 2), "tok_per_s": round(toks / dt, 2)}
    print(f"{name:<48} {toks:>5} tok {dt:7.1f}s {toks / dt:6.2f} tok/s", flush=True)
    # PURE scoring cost per candidate (prompt + ~300-token completion).
    completion = traj.token_ids
    t0 = time.perf_counter()
    for _ in range(3):
        par.score(prompt, completion)
    res["pure_score_llamacpp_s"] = round((time.perf_counter() - t0) / 3, 2)
    par.close()
    hf = HFEngine(paths.hf)
    hf.score(prompt, completion[:8])
    t0 = time.perf_counter()
    for _ in range(3):
        hf.score(prompt, completion)
    res["pure_score_hf_fp32_s"] = round((time.perf_counter() - t0) / 3, 2)
    res["pure_completion_tokens"] = len(completion)
    print(json.dumps(res, indent=2))
    out = Path(__file__).parent / "results" / f"gear-cost-{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
