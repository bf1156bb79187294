"""heal's own work per reasoning trace at 1k, 8k and 32k tokens, against the teacher's decode time.

For one synthetic reasoning trace (`<think>` steps separated by blank lines, then a boxed answer) of
N tokens of the real Qwen2.5 tokenizer, times what heal does besides generating: token pieces,
step segmentation, reasoning/answer spans, the breakpoint, hint placement and the training ids,
PURE's step and answer bookkeeping (the scorer's forward pass excluded: that is the teacher's), and
writing and reading the record through the store. The teacher's decode time for the same N tokens
comes from llama.cpp on this machine (measured here, `--decode-tokens` of them, single thread).

    python benchmarks/trace_overhead.py --model qwen2.5-coder-1.5b

Writes benchmarks/results/trace-overhead.json and a markdown table. Bytes per token: the JSON
record's size (ids, entropy, log-probs as stored today) divided by N.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path


def synthetic_trace(tok, n_tokens: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    steps, count = [], 0
    while count < n_tokens - 20:  # each step counted on its own: the generator must stay linear
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        steps.append(f"Next, {a} + {b} = {a + b}. Let me double-check that: {a + b} - {b} = {a}, so it holds.")
        count += len(tok("\n\n" + steps[-1], add_special_tokens=False)["input_ids"])
    text = "<think>\n" + "\n\n".join(steps) + "\n</think>\n\nThe answer is \\boxed{42}."
    return tok(text, add_special_tokens=False)["input_ids"]


def overhead(tok, ids: list[int], fmt) -> dict:
    from heal import reasoning
    from heal.config import GearConfig
    from heal.entropy import find_breakpoint, step_spans_from_pieces, token_pieces
    from heal.hints import text_ids, training_ids
    from heal.pure import reasoning_steps
    from heal.store import JsonlStore, pack_f16

    rng = random.Random(1)
    entropy = [round(rng.random() * 2, 5) for _ in ids]
    logprobs = [round(-rng.random() * 3, 5) for _ in ids]
    t = {}
    t0 = time.perf_counter()
    pieces = token_pieces(tok, ids)
    t["pieces"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sp = reasoning.spans(ids, tok, fmt)
    r0, r1 = sp.reasoning
    spans = step_spans_from_pieces(pieces[r0:r1])
    t["steps_and_spans"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    g = GearConfig()
    bp = find_breakpoint(entropy[r0:r1], spans, g.window, g.backup, pieces[r0:r1], g.smooth_width)
    cut = r0 + bp.cut_token
    hint = text_ids(tok, "Wait, let me re-check. I know the final answer must be 42.\n\n")
    train, _ = training_ids(ids[:cut], hint, ids[cut:], "reflection", text_ids(tok, "Wait, let me re-check this.\n\n"))
    t["breakpoint_and_hint"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    reasoning_steps(train, token_pieces(tok, train), tok, fmt)
    t["pure_bookkeeping"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        # the record as Stage 0 writes it: ids, text, float16-packed entropy and log-probs
        rec = {"key": "p/0", "token_ids": ids, "text": tok.decode(ids), "entropy": pack_f16(entropy),
               "logprobs": pack_f16(logprobs)}
        t0 = time.perf_counter()
        store = JsonlStore(Path(d) / "s.jsonl")
        store.append([rec])
        back = list(JsonlStore(Path(d) / "s.jsonl"))
        t["store_write_read"] = time.perf_counter() - t0
        assert back[0]["token_ids"] == ids and len(back[0]["entropy"]) == len(ids)
        size = os.path.getsize(Path(d) / "s.jsonl")
        entropy_bytes = len(json.dumps(rec["entropy"]))
    return {"tokens": len(ids), "seconds": t, "total_s": sum(t.values()), "bytes_per_token": size / len(ids),
            "entropy_bytes_per_token": entropy_bytes / len(ids), "steps": len(spans)}


def decode_rate(gguf: str, n: int) -> float:
    from llama_cpp import Llama

    llm = Llama(model_path=gguf, n_ctx=n + 64, n_threads=1, verbose=False)
    llm.eval(llm.tokenize(b"Compute 2 + 3.", add_bos=True))
    t0 = time.perf_counter()
    for _ in range(n):
        llm.eval([220])
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--lengths", default="1000,8000,32000")
    ap.add_argument("--decode-tokens", type=int, default=64)
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from heal import reasoning
    from heal.config import ReasoningConfig
    from heal.models import resolve

    paths = resolve(args.model)
    tok = AutoTokenizer.from_pretrained(paths.hf)
    fmt = reasoning.resolve(ReasoningConfig(preset="qwen3", prefilled=False), tok)
    rate = decode_rate(paths.gguf, args.decode_tokens)
    rows = []
    for n in map(int, args.lengths.split(",")):
        r = overhead(tok, synthetic_trace(tok, n), fmt)
        r["teacher_decode_s"] = r["tokens"] / rate
        r["share_of_decode"] = r["total_s"] / r["teacher_decode_s"]
        rows.append(r)
    out = {"model": args.model, "decode_tok_s_1_thread": rate, "load_1min": os.getloadavg()[0],
           "command": "python benchmarks/trace_overhead.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
           "rows": rows}
    path = Path(__file__).parent / "results" / "trace-overhead.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print("| tokens | pieces s | steps+spans s | breakpoint+hint s | PURE bookkeeping s | store w+r s | total s | "
          "teacher decode s | share | bytes/token | entropy bytes/token |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["seconds"]
        print(f"| {r['tokens']} | {s['pieces']:.3f} | {s['steps_and_spans']:.3f} | {s['breakpoint_and_hint']:.3f} | "
              f"{s['pure_bookkeeping']:.3f} | {s['store_write_read']:.3f} | {r['total_s']:.3f} | "
              f"{r['teacher_decode_s']:.0f} | {r['share_of_decode']:.2%} | {r['bytes_per_token']:.1f} | "
              f"{r['entropy_bytes_per_token']:.2f} |")
    print(f"\nllama.cpp decode {rate:.1f} tok/s (1 thread); results: {path}")


if __name__ == "__main__":
    main()
