"""`heal run` end to end: SmolLM2 teacher (llama.cpp), tiny local student (TRL), eval and report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


@pytest.mark.slow
def test_heal_run_end_to_end(tmp_path, smollm2, tiny_model_dir):
    train = [{"id": f"p{i}", "question": f"What is {a} + {b}?", "answer": str(a + b)}
             for i, (a, b) in enumerate([(2, 3), (4, 4), (7, 5), (1, 1), (3, 3)])]
    test = [{"id": f"t{i}", "question": f"Add {a} and {b}.", "answer": str(a + b)} for i, (a, b) in enumerate([(6, 2), (5, 5)])]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in train))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(p) + "\n" for p in test))
    ask = "\nGive a short derivation, then end with a line 'Answer: <number>'."
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "teacher": {"model": "smollm2-135m", "engine": "llamacpp", "n_ctx": 1024, "parallel": 2},
        "data": {"source": str(tmp_path / "train.jsonl")},
        "prompt": {"template": "{question}" + ask},
        "sampling": {"max_new_tokens": 48, "temperature": 0.8},
        "sample": {"k": 3},
        "gear": {"max_trajectories": 1, "continuations": 2, "window": "all", "tiers": ["hard", "corner"]},
        "guided": {"samples": 1, "template": "{question}\n(The correct answer is {answer}.)" + ask},
        "pure": {"threshold": 100.0},
        "train": {"student": tiny_model_dir, "methods": ["sft_rs", "heal"], "batch_size": 4, "progress": False,
                  "stages": {k: {"epochs": 1, "learning_rate": 1e-4} for k in ("I", "II", "III")},
                  "single": {"epochs": 1, "learning_rate": 1e-4}},
        "eval": {"data": {"source": str(tmp_path / "test.jsonl")}, "n_samples": 2, "batch_size": 4},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    heal = [sys.executable, "-m", "heal.cli"]
    res = subprocess.run(heal + ["run", str(path)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "run"
    assert "report:" in res.stdout and (run / "report.md").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["methods"]) == {"teacher", "base", "sft_rs", "heal"}
    for m in summary["methods"].values():
        assert m["n"] == 2 and m["problems"] == 2 and 0 <= m["pass@1"] <= 1
    assert (run / "report" / "accuracy.png").exists() and (run / "report" / "data.png").exists()
    contamination = json.loads((run / "eval" / "contamination.json").read_text())
    assert contamination["test"] == 2 and contamination["dropped"] == 0
    # Every stage resumes: a second run redoes nothing and writes the same summary.
    again = subprocess.run(heal + ["run", str(path)], capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "done, skipping" in again.stdout
    assert json.loads((run / "summary.json").read_text())["methods"] == summary["methods"]
