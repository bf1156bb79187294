"""Every engine on the same prompts: tokens/s and samples/s with entropy on and off, and GEAR's N
continuations of one prefix with and without prefix sharing.

    python benchmarks/engines.py --model smollm2-135m --engines hf,llamacpp,openai
    .venv-vllm/bin/python benchmarks/engines.py --model smollm2-135m --engines vllm   # vLLM's own venv

Each engine's rows are merged into benchmarks/results/engines-<model>.json (so the vLLM run, made in
its own environment, lands beside the others). `openai` is llama.cpp's OpenAI-compatible server,
started here on loopback. Numbers are for this machine (2 CPU cores); the ranking on GPUs differs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from heal.config import HFConfig, LlamaCppConfig, OpenAIConfig, VLLMConfig
from heal.engines import EngineError, make_engine
from heal.engines.base import SamplingParams, chat_prompt_ids
from heal.models import resolve
from heal.problems import load_problems


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llamacpp_server(gguf: str, threads: int) -> tuple[subprocess.Popen, str]:
    import requests

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if requests.get(f"{url}/v1/models", timeout=1).ok:
                return proc, url
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("llama.cpp server did not start")


def build(engine: str, model: str, threads: int, prefix_caching: bool = True):
    """(engine, cleanup) for one backend name."""
    if engine == "openai":
        proc, url = start_llamacpp_server(resolve(model).gguf, threads)
        eng = make_engine(OpenAIConfig(model=model, base_url=url, concurrency=1))

        def cleanup():
            eng.close()
            proc.kill()
            proc.wait()
        return eng, cleanup
    if engine == "vllm":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        eng = make_engine(VLLMConfig(model=model, dtype="float32",
                                     engine_args={"max_model_len": 2048, "enable_prefix_caching": prefix_caching}))
        return eng, eng.close
    cfg = HFConfig(model=model, batch_size=8) if engine == "hf" else LlamaCppConfig(model=model, threads=threads)
    eng = make_engine(cfg)
    return eng, eng.close


def run(engine, prompts, params, entropy: bool) -> dict:
    t0 = time.perf_counter()
    out = engine.generate(prompts, params, n=1, record_entropy=entropy, seeds=list(range(len(prompts))))
    dt = time.perf_counter() - t0
    toks = sum(len(c.token_ids) for row in out for c in row)
    return {"tokens": toks, "samples": len(prompts), "seconds": round(dt, 2), "tok_per_s": round(toks / dt, 2),
            "samples_per_s": round(len(prompts) / dt, 3)}


def accepts(engine, prompt: list[int]) -> bool:
    """Whether the engine continues from `prompt`: a text-only server (llama.cpp's) cannot continue
    from a non-canonical split such as a blank line generated as two "\n" tokens, and the openai
    engine refuses (EngineError) a prompt whose text the server reads back as other ids. One token is
    generated: the prompt is a prefix of what the caller has just generated, so whatever the server
    caches of it, it had cached already."""
    try:
        engine.generate([prompt], SamplingParams(temperature=0.0, max_new_tokens=1), n=1, record_entropy=False)
    except EngineError:
        return False
    return True


def step_prefix(engine, prompt: list[int], ids: list[int]) -> list[int]:
    """The completion cut after a line break (GEAR cuts at step boundaries), at the last such cut
    the engine continues from (only the openai engine refuses any: `accepts`)."""
    tok = engine.tokenizer
    for i in range(len(ids) - 1, 0, -1):
        if "\n" in tok.decode([ids[i]]) and (engine.name != "openai" or accepts(engine, prompt + ids[: i + 1])):
            return ids[: i + 1]
    return ids[:1]


def gear(engine, prompt, prefix, n: int, params) -> dict:
    """N continuations of one prefix: one call with n=N (the engine may share the prefix's KV cache)
    against N calls of n=1 (each pays for the prefix). Tokens/s counts continuation tokens."""
    full = prompt + prefix
    if engine.name == "llamacpp":
        engine.llm.reset()
        engine.llm.n_tokens = 0
    t0 = time.perf_counter()
    shared = engine.generate([full], params, n=n, record_entropy=True, seeds=[1])[0]
    t_shared = time.perf_counter() - t0
    t0 = time.perf_counter()
    indep = []
    for j in range(n):
        if engine.name == "llamacpp":  # forget the cached prefix: this call pays for it again
            engine.llm.reset()
            engine.llm.n_tokens = 0
        indep += engine.generate([full], params, n=1, record_entropy=True, seeds=[1 + j])[0]
    t_indep = time.perf_counter() - t0
    ts, ti = sum(len(c.token_ids) for c in shared), sum(len(c.token_ids) for c in indep)
    return {"prefix_tokens": len(full), "n": n, "shared_tok_per_s": round(ts / t_shared, 2),
            "independent_tok_per_s": round(ti / t_indep, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--engines", default="hf,llamacpp,openai")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    problems = load_problems("reasoning_gym:chain_sum", size=args.prompts, seed=123,
                             params={"min_terms": 4, "max_terms": 5, "min_digits": 3, "max_digits": 4})
    params = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=0)
    out_path = Path(args.out or Path(__file__).parent / "results" / f"engines-{args.model}.json")
    result = json.loads(out_path.read_text()) if out_path.exists() else {"model": args.model, "engines": {}}
    result.update({"model": args.model, "max_new_tokens": args.max_new_tokens, "prompts": args.prompts,
                   "machine": f"{os.cpu_count()} CPU cores", "sampling": params.__dict__})
    for name in args.engines.split(","):
        eng, cleanup = build(name, args.model, args.threads)
        try:
            prompts = [chat_prompt_ids(eng.tokenizer, f"{p.question}\nPlease reason step by step, and put your final "
                                                      f"answer within \\boxed{{}}.") for p in problems]
            run(eng, prompts[:1], SamplingParams(max_new_tokens=4), True)  # warm-up
            row = {"batch_size": getattr(eng, "batch_size", 1),
                   "entropy_off": run(eng, prompts, params, False), "entropy_on": run(eng, prompts, params, True)}
            row["entropy_cost"] = round(1 - row["entropy_on"]["tok_per_s"] / row["entropy_off"]["tok_per_s"], 3)
            [[first]] = eng.generate(prompts[:1], SamplingParams(temperature=0.0, max_new_tokens=64), record_entropy=False)
            prefix = step_prefix(eng, prompts[0], first.token_ids)
            row["gear_n4"] = gear(eng, prompts[0], prefix, 4, params)
        finally:
            cleanup()
        if name == "vllm":  # prefix caching off: every continuation recomputes the prefix
            eng, cleanup = build(name, args.model, args.threads, prefix_caching=False)
            try:
                row["gear_n4_no_prefix_caching"] = gear(eng, prompts[0], prefix, 4, params)
            finally:
                cleanup()
        result["engines"][name] = row
        print(name, json.dumps(row), flush=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| engine | entropy off tok/s | entropy on tok/s | samples/s (on) | entropy cost | GEAR N=4 shared tok/s | independent tok/s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in result["engines"].items():
        g = r["gear_n4"]
        print(f"| {name} | {r['entropy_off']['tok_per_s']} | {r['entropy_on']['tok_per_s']} | "
              f"{r['entropy_on']['samples_per_s']} | {r['entropy_cost']:.1%} | {g['shared_tok_per_s']} | {g['independent_tok_per_s']} |")
    print(f"\nwrote {out_path}")


if __name__ == "__main__":
    main()
