"""How close llama.cpp's entropies are to the exact fp32 transformers values on the same text.

    python benchmarks/entropy_agreement.py --model smollm2-135m --samples 6

For sampled completions of chain_sum prompts: per-token entropy from (a) transformers fp32 on the
dequantized copy (exact), (b) llama.cpp scoring token by token, (c) llama.cpp batched scoring
(64 tokens per decode), (d) what llama.cpp recorded while generating with `parallel` sequences.
Prints mean / max absolute differences and the correlation against (a); writes
benchmarks/results/entropy-agreement-<model>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from heal.engines.base import SamplingParams, chat_prompt_ids
from heal.engines.hf import HFEngine
from heal.engines.llamacpp import LlamaCppEngine
from heal.models import resolve
from heal.problems import load_problems


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--parallel", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    paths = resolve(args.model)
    hf = HFEngine(paths.hf)
    single = LlamaCppEngine(paths.gguf, tokenizer=hf.tokenizer, n_ctx=1024)
    par = LlamaCppEngine(paths.gguf, tokenizer=hf.tokenizer, n_ctx=1024, parallel=args.parallel)
    problems = load_problems("reasoning_gym:chain_sum", size=args.samples, seed=7,
                             params={"min_terms": 4, "max_terms": 5, "min_digits": 3, "max_digits": 4})
    prompts = [chat_prompt_ids(hf.tokenizer, p.question + "\nPlease reason step by step.") for p in problems]
    params = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=3)
    comps = par.generate(prompts, params, n=1)
    diffs: dict[str, list[np.ndarray]] = {"llamacpp_token_by_token": [], "llamacpp_batched": [],
                                          f"llamacpp_parallel{args.parallel}_recorded": []}
    exact_all, other = [], {k: [] for k in diffs}
    for prompt, [c] in zip(prompts, comps):
        exact = np.array(hf.score(prompt, c.token_ids).entropy)
        got = {"llamacpp_token_by_token": np.array(single.score(prompt, c.token_ids, chunk=1).entropy),
               "llamacpp_batched": np.array(single.score(prompt, c.token_ids).entropy),
               f"llamacpp_parallel{args.parallel}_recorded": np.array(c.entropy)}
        exact_all.append(exact)
        for k, v in got.items():
            diffs[k].append(np.abs(v - exact))
            other[k].append(v)
    ex = np.concatenate(exact_all)
    res = {"model": args.model, "tokens": int(ex.size), "mean_exact_entropy": round(float(ex.mean()), 4)}
    for k in diffs:
        d = np.concatenate(diffs[k])
        res[k] = {"mean_abs_diff": round(float(d.mean()), 4), "max_abs_diff": round(float(d.max()), 4),
                  "corr": round(float(np.corrcoef(np.concatenate(other[k]), ex)[0, 1]), 4)}
    print(json.dumps(res, indent=2))
    out = Path(__file__).parent / "results" / f"entropy-agreement-{args.model}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    single.close()
    par.close()


if __name__ == "__main__":
    main()
