"""Peak memory and time of two optimizer steps of the 0.5B student through heal's own training path
(`heal.pace.train_stage`: TRL's SFTTrainer), batch 8 x L tokens, as the PACE decisive run would train
it: LoRA (r 64, alpha 128, all linear layers) with and without activation recomputation, LoRA in
two micro-batches of 4, and full fine-tuning (activation recomputation on). Each variant runs in its own process, so each peak is its own. The
question it answers: does a variant fit in the 24 GB of the CPU machines before the run commits
hours to it (the student pilot would otherwise die to the kernel's OOM killer, again on every resume).

    python benchmarks/train_step_memory.py lora lora-recompute lora-accum2 full [--tokens 512]

Rows (one per variant and token count, with the CPU they ran on) are merged into
benchmarks/results/train-step-memory.json.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "train-step-memory.json"
LORA = {"r": 64, "alpha": 128, "target_modules": "all-linear", "merge": True}
VARIANTS = {  # name -> config overrides (batch 8 per optimizer step in every one)
    "lora": {"train.lora": LORA, "train.gradient_checkpointing": False},
    "lora-recompute": {"train.lora": LORA, "train.gradient_checkpointing": True},
    "lora-accum2": {"train.lora": LORA, "train.gradient_checkpointing": False, "train.batch_size": 4,
                    "train.grad_accum": 2},
    "full": {"train.lora": None, "train.gradient_checkpointing": True},
}


def one(variant: str, tokens: int) -> dict:
    import random

    import heal
    from heal.models import resolve
    from heal.pace import train_stage

    with tempfile.TemporaryDirectory() as tmp:
        cfg = heal.load_config(ROOT / "experiments" / "pace_decisive.yaml",
                               {"output_dir": tmp, "train.progress": False, **VARIANTS[variant]})
        rng = random.Random(0)
        rows = []
        for _ in range(cfg.train.batch_size * cfg.train.grad_accum):  # the prompt (100 tokens) is masked, as in training
            ids = [rng.randrange(100, 50_000) for _ in range(tokens)]
            rows.append({"input_ids": ids, "labels": [-100] * 100 + ids[100:]})
        stage = {"name": "I", "epochs": 1, "learning_rate": 1e-4, "max_steps": 2, "fingerprint": "benchmark"}
        t = time.time()
        meta = train_stage(resolve(cfg.train.student).hf, rows, Path(tmp) / "stage", cfg, stage, seed=0,
                           log=lambda *a: None)
    return {"variant": variant, "tokens": tokens, "batch": cfg.train.batch_size, "grad_accum": cfg.train.grad_accum,
            "steps": meta["steps"],
            "seconds_per_step": meta["train_runtime_s"] / meta["steps"], "wall_s": time.time() - t,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--tokens", type=int, default=512, help="tokens per example (the run's answers: up to ~500)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.variants[0], args.tokens)))
        return
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    flags = next((set(line.split(":", 1)[1].split()) for line in open("/proc/cpuinfo") if line.startswith("flags")), set())
    cpu += " (" + ", ".join(f for f in ("avx2", "avx512f", "amx_tile") if f in flags) + ")"
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    for variant in args.variants:
        out = subprocess.run([sys.executable, __file__, variant, "--tokens", str(args.tokens), "--one"],
                             capture_output=True, text=True)
        if out.returncode:
            row = {"variant": variant, "tokens": args.tokens, "failed": out.returncode,
                   "error": "killed (SIGKILL: on this machine, the kernel's OOM killer)" if out.returncode == -9
                   else (out.stderr.strip().splitlines() or [""])[-1][-300:]}
        else:
            row = json.loads(out.stdout.strip().splitlines()[-1])
        row |= {"cpu": cpu, "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
                "date": time.strftime("%Y-%m-%d")}
        print(json.dumps(row), flush=True)
        rows = [r for r in rows if (r["variant"], r["tokens"], r["cpu"]) != (variant, args.tokens, cpu)] + [row]
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
