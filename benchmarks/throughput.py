"""Generation throughput of the engines, with entropy recording on and off, against plain
`model.generate` on the same prompts.

Useful tokens/s counts only real completion tokens (up to and including the end-of-turn token);
padding rows that keep "generating" after their EOS inside a batch are excluded. Each config
generates from the same chain_sum prompts with the method doc's sampling settings.

    python benchmarks/throughput.py --model qwen2.5-coder-1.5b            # the default teacher
    python benchmarks/throughput.py --model smollm2-135m --prompts 8      # quick

Writes a markdown table to stdout and JSON to benchmarks/results/throughput-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from heal.engines.base import SamplingParams, chat_prompt_ids
from heal.engines.hf import HFEngine
from heal.engines.llamacpp import LlamaCppEngine
from heal.models import resolve
from heal.problems import load_problems


def useful_tokens(rows: list[list[int]], stop: set[int]) -> int:
    n = 0
    for toks in rows:
        for t in toks:
            n += 1
            if t in stop:
                break
    return n


def bench_plain_generate(engine: HFEngine, prompts, params: SamplingParams, batch: int) -> tuple[int, float]:
    """model.generate with nothing of ours attached: the baseline."""
    tok, stop = 0, set(engine.eos)
    t0 = time.perf_counter()
    for s in range(0, len(prompts), batch):
        chunk = prompts[s : s + batch]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), engine.pad_id)
        mask = torch.zeros_like(ids)
        for r, p in enumerate(chunk):
            ids[r, width - len(p) :] = torch.tensor(p)
            mask[r, width - len(p) :] = 1
        torch.manual_seed(params.seed)
        with torch.no_grad():
            out = engine.model.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                                        temperature=params.temperature, top_p=params.top_p, top_k=0,
                                        max_new_tokens=params.max_new_tokens, eos_token_id=sorted(stop),
                                        pad_token_id=engine.pad_id)
        tok += useful_tokens(out[:, width:].tolist(), stop)
    return tok, time.perf_counter() - t0


def bench_engine(engine, prompts, params: SamplingParams, record_entropy: bool, batch: int) -> tuple[int, float]:
    if isinstance(engine, HFEngine):
        engine.batch_size = batch
    t0 = time.perf_counter()
    out = engine.generate(prompts, params, n=1, record_entropy=record_entropy)
    dt = time.perf_counter() - t0
    return sum(len(c.token_ids) for row in out for c in row), dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--prompts", type=int, default=16, help="prompts for batched runs")
    ap.add_argument("--prompts-batch1", type=int, default=4, help="prompts for batch-1 transformers runs (slow)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-sizes", default="1,8,16")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--reps", type=int, default=1, help="repeat each config (interleaved); the best run counts")
    ap.add_argument("--parallel", type=int, default=4, help="llama.cpp sequences decoded together (0: skip)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    paths = resolve(args.model)
    problems = load_problems("reasoning_gym:chain_sum", size=args.prompts, seed=123,
                             params={"min_terms": 4, "max_terms": 5, "min_digits": 3, "max_digits": 4})
    params = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=0)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, micro = [], {}

    def record(engine_name, batch, entropy, n_prompts, tok, dt):
        rows.append({"engine": engine_name, "batch": batch, "entropy": entropy, "prompts": n_prompts,
                     "useful_tokens": tok, "seconds": round(dt, 2), "tok_per_s": round(tok / dt, 2)})
        print(f"  {engine_name:<16} batch {batch:>2} entropy {str(entropy):<5} {tok:>5} tok {dt:7.1f}s "
              f"{tok / dt:7.2f} tok/s", flush=True)

    hf = HFEngine(paths.hf, batch_size=1)
    prompt_ids = [chat_prompt_ids(hf.tokenizer, f"{p.question}\nPlease reason step by step, and put your final "
                                               f"answer within \\boxed{{}}.") for p in problems]

    def best(name, batch, ent, n_prompts, runs):
        tok, dt = max(runs, key=lambda r: r[0] / r[1])
        record(name, batch, ent, n_prompts, tok, dt)

    if not args.skip_hf:
        for b in [int(x) for x in args.batch_sizes.split(",")]:
            ps = prompt_ids[: args.prompts_batch1] if b == 1 else prompt_ids
            bench_engine(hf, ps[:1], SamplingParams(max_new_tokens=4), True, 1)  # warm-up
            runs = {"plain": [], False: [], True: []}
            for _ in range(args.reps):  # interleaved, so drift in machine load hits every config alike
                runs["plain"].append(bench_plain_generate(hf, ps, params, b))
                for ent in (False, True):
                    runs[ent].append(bench_engine(hf, ps, params, ent, b))
            best("generate (plain)", b, None, len(ps), runs["plain"])
            for ent in (False, True):
                best("heal hf", b, ent, len(ps), runs[ent])
        # The recorder's own cost per decode step, timed alone on this vocabulary (precise where
        # end-to-end differences drown in run-to-run noise).
        from heal.engines.hf import EntropyRecorder

        vocab = hf.model.config.vocab_size
        for b in [int(x) for x in args.batch_sizes.split(",")]:
            rec, x, ids = EntropyRecorder(0), torch.randn(b, vocab), torch.zeros(b, 1, dtype=torch.long)
            for _ in range(3):
                rec(ids, x)
            t0 = time.perf_counter()
            for _ in range(20):
                rec(ids, x)
            per_step = (time.perf_counter() - t0) / 20
            step = next(r["seconds"] / (r["useful_tokens"] / b) for r in rows
                        if (r["engine"], r["batch"], r["entropy"]) == ("heal hf", b, False))
            micro[f"hf_recorder_ms_per_step_batch{b}"] = round(per_step * 1e3, 2)
            micro[f"hf_recorder_share_of_step_batch{b}"] = round(per_step / step, 4)
    del hf
    if paths.gguf:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(paths.hf)
        for par in [1] + ([args.parallel] if args.parallel > 1 else []):
            lc = LlamaCppEngine(paths.gguf, tokenizer=tok, threads=args.threads, parallel=par)
            bench_engine(lc, prompt_ids[:1], SamplingParams(max_new_tokens=4), True, 1)  # warm-up
            runs = {False: [], True: []}
            for _ in range(args.reps):
                for ent in (False, True):
                    runs[ent].append(bench_engine(lc, prompt_ids, params, ent, 1))
            for ent in (False, True):
                best("heal llamacpp" if par == 1 else f"heal llamacpp x{par}", par, ent, len(prompt_ids), runs[ent])
            lc.close()

    def rate(engine, batch, ent):
        return next((r["tok_per_s"] for r in rows if (r["engine"], r["batch"], r["entropy"]) == (engine, batch, ent)), None)

    derived = {}
    for b in [int(x) for x in args.batch_sizes.split(",")]:
        on, off = rate("heal hf", b, True), rate("heal hf", b, False)
        if on and off:
            derived[f"hf_entropy_cost_batch{b}"] = round(1 - on / off, 4)
    lon, loff = rate("heal llamacpp", 1, True), rate("heal llamacpp", 1, False)
    if lon and loff:
        derived["llamacpp_entropy_cost"] = round(1 - lon / loff, 4)
    base = rate("generate (plain)", 1, None)
    if lon and base:
        derived["llamacpp_with_entropy_vs_generate_batch1"] = round(lon / base, 2)
    pon = rate(f"heal llamacpp x{args.parallel}", args.parallel, True)
    if pon and base:
        derived[f"llamacpp_x{args.parallel}_with_entropy_vs_generate_batch1"] = round(pon / base, 2)
    derived.update(micro)

    print("\n| engine | batch | entropy | prompts | useful tokens | s | useful tok/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ent = "-" if r["entropy"] is None else ("on" if r["entropy"] else "off")
        print(f"| {r['engine']} | {r['batch']} | {ent} | {r['prompts']} | {r['useful_tokens']} | {r['seconds']} | {r['tok_per_s']} |")
    print("\n" + "\n".join(f"{k}: {v}" for k, v in derived.items()))
    out = Path(args.out or Path(__file__).parent / "results" / f"throughput-{args.model.replace('/', '_')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "max_new_tokens": args.max_new_tokens, "sampling": params.__dict__,
                               "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                                           "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
                               "reps": args.reps, "rows": rows, "derived": derived}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
