"""One full-fine-tuning step (forward, backward, AdamW) of the 0.5B student, fp32 vs bf16 autocast,
batch 8 x 300 random tokens, 2 threads: the numbers PLAN.md (pace-decisive, "Training schedule")
cites. With AVX2-only kernels: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python ... bf16

    python benchmarks/train_step_dtype.py fp32 bf16
"""

import sys
import time

import torch
from transformers import AutoModelForCausalLM

from heal.models import resolve

torch.set_num_threads(2)
model = AutoModelForCausalLM.from_pretrained(resolve("qwen2.5-coder-0.5b").hf, dtype=torch.float32)
model.train()
x = torch.randint(0, 50000, (8, 300))
opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
for mode in sys.argv[1:] or ["fp32", "bf16"]:
    for rep in range(2):
        t = time.time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        print(f"{mode} step {rep}: {time.time() - t:.1f} s", flush=True)
