"""Student evaluation throughput: transformers' padded batches vs vLLM's continuous batching vs
llama.cpp on the student's exported F16 GGUF (eval.engine llamacpp), on the held-out questions and
sampling settings of the PACE experiment (answers of very different lengths).

    python benchmarks/eval_engines.py --engine hf --model experiments/runs/pace-smollm2/checkpoints/sft_rs/stage-single
    VLLM_CPU_KVCACHE_SPACE=4 .venv-vllm/bin/python benchmarks/eval_engines.py --engine vllm --model ...
    python benchmarks/eval_engines.py --engine llamacpp --reference qwen2.5-coder-0.5b --model FOLDER --threads 1 --parallel 4 [--gguf-type q8_0]

llamacpp rows also record the export's time and how far the exported model's logits are from the
transformers model's on one prompt (max |difference|, and the same for the alias's own GGUF).

Rows are merged into benchmarks/results/eval-engines.json. A trained student (not the base model,
which rarely stops) is the realistic case: most answers end early and a padded batch waits for its
longest one. Numbers are for this machine (2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from heal.config import engine_config, load_config
from heal.engines import make_engine
from heal.engines.base import SamplingParams, chat_prompt_ids
from heal.store import read_jsonl

ROOT = Path(__file__).resolve().parent.parent


def export_and_compare(model: str, reference: str, gguf_type: str) -> tuple[Path, dict]:
    """Export `model` (a transformers folder) once against `reference`'s GGUF; the logits of one prompt
    from transformers, the export and the alias's own (quantized) GGUF."""
    import llama_cpp
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from heal.models import export_file, export_gguf, resolve

    ref = resolve(reference).gguf
    t = time.time()
    out = Path(model) / export_file(gguf_type)
    if not out.exists():
        export_gguf(model, ref, gguf_type=gguf_type)
    export_s = time.time() - t
    ids = AutoTokenizer.from_pretrained(model)("What is 1234 + 5678? Add the thousands first.")["input_ids"]
    with torch.no_grad():
        hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)(torch.tensor([ids])).logits[0].numpy()
    diffs = {}
    for name, path in (("export", out), ("alias_gguf", ref)):
        llm = llama_cpp.Llama(str(path), n_ctx=128, n_threads=1, logits_all=True, verbose=False)
        llm.eval(ids)
        diffs[name] = round(float(np.abs(np.array(llm.scores[:len(ids)]) - hf).max()), 3)
        llm.close()
    return out, {"gguf_type": gguf_type, "export_s": round(export_s, 1), "max_abs_logit_diff_vs_hf": diffs,
                 "gguf_mib": round(out.stat().st_size / 2**20)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=["hf", "vllm", "llamacpp"], required=True)
    ap.add_argument("--reference", help="llamacpp: the student alias whose GGUF gives tokenizer and metadata")
    ap.add_argument("--threads", type=int, default=1, help="llamacpp threads")
    ap.add_argument("--gguf-type", default="f16", choices=["f16", "q8_0"], help="llamacpp: the export's type")
    ap.add_argument("--parallel", type=int, default=4, help="llamacpp sequences decoded together")
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16, help="hf: rows per generate() call")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval-engines.json"))
    args = ap.parse_args()
    cfg = load_config(ROOT / "experiments" / "pace_experiment.yaml")
    problems = list(read_jsonl(ROOT / "experiments" / "data" / "pace_heldout.jsonl"))[: args.prompts]
    extra = {}
    if args.engine == "llamacpp":
        gguf_file, extra = export_and_compare(args.model, args.reference, args.gguf_type)
        mc = engine_config(model=str(gguf_file), engine="llamacpp", threads=args.threads, parallel=args.parallel)
    else:
        mc = engine_config(model=args.model, engine=args.engine, batch_size=args.batch_size,
                           **({"engine_args": cfg.eval.engine_args} if args.engine == "vllm" else {}))
    t_load = time.time()
    eng = make_engine(mc)
    t_load = time.time() - t_load
    prompts = [chat_prompt_ids(eng.tokenizer, cfg.prompt.template.format(question=p["question"]), cfg.prompt.system)
               for p in problems]
    s = cfg.sampling
    params = SamplingParams(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens)
    chunk = args.batch_size if args.engine == "hf" else len(prompts)  # llamacpp: its engine batches by parallel
    load_at_start = os.getloadavg()[0]  # other work on the 2 cores slows every engine
    t0, tokens = time.time(), 0
    for i in range(0, len(prompts), chunk):
        part = prompts[i : i + chunk]
        comps = eng.generate(part, params, n=1, record_entropy=False, seeds=list(range(i, i + len(part))))
        tokens += sum(len(c[0].token_ids) for c in comps)
    dt = time.time() - t0
    eng.close()
    row = {"engine": args.engine, "model": args.model, "prompts": len(prompts), "batch_size": chunk,
           "max_new_tokens": s.max_new_tokens, "tokens": tokens, "seconds": round(dt, 1),
           "tok_per_s": round(tokens / dt, 1), "answers_per_s": round(len(prompts) / dt, 3), "load_s": round(t_load, 1),
           "load_average_at_start": round(load_at_start, 2), **extra}
    print(json.dumps(row))
    out = Path(args.out)
    rows = json.loads(out.read_text()) if out.exists() else []
    rows = [r for r in rows if (r["engine"], r["model"], r.get("gguf_type")) != (row["engine"], row["model"], row.get("gguf_type"))] + [row]
    out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
