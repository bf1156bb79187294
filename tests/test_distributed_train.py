"""PACE under `accelerate launch`: 2 CPU processes (gloo) give the loss curve of 1 process on the
same global batch, with the shipped DDP config."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import write_tiny_run

ROOT = Path(__file__).resolve().parent.parent


def _train(tmp_path, tiny_model_dir, name: str, processes: int, launcher: str = "ddp") -> tuple[dict, Path]:
    d = tmp_path / name
    d.mkdir()
    # Global batch 4 either way: 4 x 1 process, or 2 per process x 2 processes. keep_all trains on all
    # 8 Stage 0 samples for 2 epochs: 4 optimizer steps.
    cfg = write_tiny_run(d, tiny_model_dir, {"methods": ["keep_all"], "batch_size": 4 // processes,
                                             "match_budget": False, "single": {"epochs": 2, "learning_rate": 1e-3}})
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    cmd = [accelerate, "launch", "--config_file", str(ROOT / "configs" / "accelerate" / f"{launcher}.yaml"),
           "--num_processes", str(processes), "--num_machines", "1", "-m", "heal.cli", "train", "-c", str(cfg)]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=d)
    assert res.returncode == 0, res.stderr[-3000:]
    run = yaml.safe_load(cfg.read_text())["output_dir"]
    ckpt = Path(run) / "checkpoints" / "keep_all" / "stage-single"
    return json.loads((ckpt / "heal_stage.json").read_text()), ckpt


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["ddp", "fsdp"])
def test_two_processes_match_one_on_the_same_global_batch(tmp_path, tiny_model_dir, launcher):
    from safetensors.torch import load_file

    one, one_dir = _train(tmp_path, tiny_model_dir, "one", 1)
    two, two_dir = _train(tmp_path, tiny_model_dir, launcher, 2, launcher)
    print(f"loss curves, 1 process: {one['loss_curve']}, {launcher} x 2 processes: {two['loss_curve']}")
    assert one["processes"] == 1 and two["processes"] == 2
    assert one["steps"] == two["steps"] == 4
    np.testing.assert_allclose(two["loss_curve"], one["loss_curve"], rtol=1e-3)
    assert one["loss_curve"][-1] < one["loss_curve"][0]  # it trained
    # The saved stage (FSDP: gathered from the shards) is one ordinary folder with the same weights.
    a, b = load_file(str(one_dir / "model.safetensors")), load_file(str(two_dir / "model.safetensors"))
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_allclose(b[name].float().numpy(), a[name].float().numpy(), atol=1e-4)
