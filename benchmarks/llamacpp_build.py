"""llama.cpp builds and thread counts: prompt and decode tokens/s of one GGUF.

Compares the build `make setup` installs (portable: -DGGML_NATIVE=OFF, AVX2/FMA/F16C) with a native
build (pip's default, -DGGML_NATIVE=ON: every instruction set of the build machine, AMX included,
which GCC 12 miscompiles) at 1 and 2 threads, on an idle machine and with two busy processes on the
cores (what a `heal` stage meets beside a training job). Each measurement runs in a child process, so
a build that crashes is recorded as a crash.

    python benchmarks/llamacpp_build.py --model qwen2.5-coder-1.5b \
        --build portable= --build native=/tmp/native-site   # native: an unpacked wheel folder

`--build NAME=PATH` puts PATH first on the child's PYTHONPATH (empty: the installed llama_cpp). Writes
benchmarks/results/llamacpp-build-<model>.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
import llama_cpp
from llama_cpp import Llama
gguf, threads, n_prompt, n_decode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=gguf, n_ctx=n_prompt + n_decode + 8, n_batch=512, n_threads=threads,
            n_threads_batch=threads, verbose=False, seed=0)
words = ("The sum of the first few numbers is computed step by step and then checked again. " * 200).encode()
prompt = llm.tokenize(words, add_bos=True)[:n_prompt]
rates = {"prompt": [], "decode": []}
for rep in range(2):  # the first pass warms caches and pages the weights in; the second is reported
    llm.reset()
    t = time.perf_counter()
    llm.eval(prompt)
    rates["prompt"].append(len(prompt) / (time.perf_counter() - t))
    tok = prompt[-1]
    t = time.perf_counter()
    for _ in range(n_decode):  # decode cost does not depend on which token is fed
        llm.eval([tok])
    rates["decode"].append(n_decode / (time.perf_counter() - t))
print(json.dumps({"version": llama_cpp.__version__, "prompt_tok_s": rates["prompt"][-1],
                  "decode_tok_s": rates["decode"][-1], "system_info": llama_cpp.llama_print_system_info().decode()}))
"""


def cpu() -> dict:
    info = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    return {"model": fields.get("Model name", "").strip(), "cores": os.cpu_count(),
            "features": sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "f16c")))}


def measure(site: str, gguf: str, threads: int, n_prompt: int, n_decode: int, busy: int) -> dict:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        time.sleep(1.0 if busy else 0)
        # The build under test first on the child's path (ahead of site-packages' llama_cpp).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))}
        p = subprocess.run([sys.executable, "-c", CHILD, gguf, str(threads), str(n_prompt), str(n_decode)],
                           capture_output=True, text=True, timeout=1800, env=env)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    if p.returncode < 0:
        return {"crashed": f"signal {-p.returncode}"}
    if p.returncode:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--build", action="append", default=None, help="NAME=SITE_DIR (empty: installed)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--busy", default="0,2", help="busy-loop processes beside the measurement")
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--out", default=None, help="results file (default: results/llamacpp-build-MODEL.json)")
    ap.add_argument("--reps", type=int, default=2, help="repetitions, builds interleaved; the median is reported")
    args = ap.parse_args()
    from heal.models import resolve

    gguf = resolve(args.model).gguf
    builds = [b.split("=", 1) for b in (args.build or ["portable="])]
    rows, raw = [], []
    for busy in map(int, args.busy.split(",")):
        for threads in map(int, args.threads.split(",")):
            runs = {name: [] for name, _ in builds}
            for rep in range(args.reps):  # builds interleaved: a load change hits both alike
                for name, site in builds:
                    r = measure(site, gguf, threads, args.prompt_tokens, args.decode_tokens, busy)
                    r["load_1min"] = os.getloadavg()[0]
                    runs[name].append(r)
                    raw.append({"build": name, "threads": threads, "busy_processes": busy, "rep": rep, **r})
                    print(json.dumps(raw[-1])[:300], file=sys.stderr)
            for name, rs in runs.items():
                ok = [r for r in rs if "decode_tok_s" in r]
                med = lambda k: sorted(r[k] for r in ok)[len(ok) // 2] if ok else None  # noqa: E731
                row = {"build": name, "threads": threads, "busy_processes": busy}
                if ok:
                    row.update(prompt_tok_s=med("prompt_tok_s"), decode_tok_s=med("decode_tok_s"), reps=len(ok))
                else:
                    row.update({k: v for k, v in rs[0].items() if k in ("crashed", "error")})
                rows.append(row)
    out = {"model": args.model, "cpu": cpu(), "python": platform.python_version(),
           "load_before": os.getloadavg(), "prompt_tokens": args.prompt_tokens, "decode_tokens": args.decode_tokens,
           "command": "python benchmarks/llamacpp_build.py " + " ".join(sys.argv[1:]), "rows": rows, "runs": raw}
    path = Path(args.out) if args.out else Path(__file__).parent / "results" / f"llamacpp-build-{args.model}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"| build | threads | busy processes | prompt tok/s | decode tok/s |\n|---|---|---|---|---|")
    for r in rows:
        rate = lambda k: f"{r[k]:.1f}" if r.get(k) else r.get("crashed") or r.get("error")  # noqa: E731
        print(f"| {r['build']} | {r['threads']} | {r['busy_processes']} | {rate('prompt_tok_s')} | {rate('decode_tok_s')} |")
    print(f"\n{out['cpu']['model']}, {out['cpu']['cores']} cores; results: {path}")


if __name__ == "__main__":
    main()
