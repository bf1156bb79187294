"""`heal doctor`: does this machine run heal's native code? A smoke decode in a child process.

llama.cpp is compiled on the machine that installs it. A build whose CPU kernels this CPU cannot run
(a native build copied to another CPU, or GCC 12's miscompiled AMX kernels: SIGSEGV at the first
multi-token decode) kills the process that loads it, with no Python error to catch. So the check runs
in a child: a prompt of several tokens (a batched decode, where the AMX fault was) and a few
generated tokens. A crash becomes one line naming the signal and the fix.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

_SMOKE = r"""
import json, sys, time
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=int(sys.argv[2]), verbose=False, seed=0)
prompt = llm.tokenize(b"The numbers one, two, three, four and five, then", add_bos=True)
t = time.time()
out = llm.create_completion(prompt, max_tokens=8, temperature=0.0)
print(json.dumps({"prompt_tokens": len(prompt), "text": out["choices"][0]["text"], "s": time.time() - t}))
"""

FIX = ("rebuild llama.cpp portably: `rm -f .venv/.llama-cpp-build && make setup` (the Makefile builds with "
       "-DGGML_NATIVE=OFF and --no-cache-dir), or by hand: CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install "
       "--no-cache-dir --force-reinstall --no-deps llama-cpp-python==0.3.36")


def cpu_features() -> list[str]:
    """The SIMD features of this CPU that decide which ggml kernels run (from /proc/cpuinfo)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    have = set(flags.split(":", 1)[1].split())
    return [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                        "amx_bf16") if f in have]


def smoke_decode(gguf: str, threads: int = 1, timeout_s: float = 300.0) -> tuple[bool, str]:
    """(ok, one line). Runs the smoke decode of `gguf` in a child process."""
    try:
        proc = subprocess.run([sys.executable, "-c", _SMOKE, gguf, str(threads)], capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"llama.cpp smoke decode did not finish in {timeout_s:.0f} s (a hung native library); {FIX}"
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        return False, (f"llama.cpp crashed ({name}) decoding a short prompt: this build does not run on this CPU "
                       f"({', '.join(cpu_features()) or 'unknown features'}); {FIX}")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"llama.cpp smoke decode failed: {last}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return True, (f"llama.cpp ok: {out['prompt_tokens']}-token prompt and 8 new tokens in {out['s']:.2f} s "
                  f"({out['text'].strip()[:40]!r})")
