"""Stage 0 end to end: sampling, verification, tiers, resume after kill -9, the CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from heal.config import load_config
from heal.runs import tier_of
from heal.stage0 import run_sample, summarize
from heal.store import read_jsonl


def test_tiers_follow_the_method_doc():
    assert tier_of(4, 8) == "solved" and tier_of(8, 8) == "solved"
    assert tier_of(3, 8) == "hard" and tier_of(2, 8) == "hard"
    assert tier_of(1, 8) == "corner" and tier_of(0, 8) == "corner"
    assert tier_of(1, 2) == "solved"  # tiny K: a pass rate of 0.5 is solved before it is corner


def _write_problems(path: Path, n: int = 3) -> Path:
    rows = [{"id": f"p{i}", "question": f"What is {i} + {i + 2}?", "answer": str(2 * i + 2)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp_path, model, engine, k=2, n=3, max_new=24):
    problems = _write_problems(tmp_path / "problems_in.jsonl", n)
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "teacher": {"model": model, "engine": engine, **({"n_ctx": 1024} if engine == "llamacpp" else {"batch_size": 4})},
        "data": {"source": str(problems)},
        "sampling": {"max_new_tokens": max_new, "temperature": 0.8},
        "sample": {"k": k},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_run_sample_hf_tiny(tmp_path, tiny_model_dir):
    cfg = load_config(_config(tmp_path, tiny_model_dir, "hf", k=3, n=3))
    summary = run_sample(cfg, progress=False, log=lambda *a: None)
    run = Path(cfg.output_dir)
    recs = list(read_jsonl(run / "samples.jsonl"))
    assert len(recs) == 9 and len({r["key"] for r in recs}) == 9
    r = recs[0]
    assert len(r["token_ids"]) == len(r["entropy"]) == len(r["logprobs"]) == r["n_tokens"]
    assert r["truncated"] == (r["finish_reason"] == "length")
    assert {"pred", "correct", "verify_error", "seed", "model", "engine", "sampling"} <= set(r)
    assert summary["samples"] == 9 and sum(summary["tiers"].values()) == 3
    tiers = list(read_jsonl(run / "tiers.jsonl"))
    assert [t["n"] for t in tiers] == [3, 3, 3]
    # The echoed config carries the package version.
    assert yaml.safe_load((run / "config.yaml").read_text())["heal_version"]
    # Re-running is a no-op: nothing is sampled twice.
    run_sample(cfg, progress=False, log=lambda *a: None)
    assert len(list(read_jsonl(run / "samples.jsonl"))) == 9


def test_resume_refuses_a_different_config(tmp_path, tiny_model_dir):
    from heal.rundir import RunMismatch

    path = _config(tmp_path, tiny_model_dir, "hf", k=1, n=2, max_new=8)
    run_sample(load_config(path), progress=False, log=lambda *a: None)
    with pytest.raises(RunMismatch, match="sampling"):
        run_sample(load_config(path, {"sampling.temperature": 0.3}), progress=False, log=lambda *a: None)
    # A later stage run with other settings rewrites config.yaml; the reference stays what Stage 0 used.
    from heal.config import echo_config

    echo_config(load_config(path, {"sampling.temperature": 0.3}), tmp_path / "run")
    run_sample(load_config(path), progress=False, log=lambda *a: None)
    with pytest.raises(RunMismatch, match="sampling"):
        run_sample(load_config(path, {"sampling.temperature": 0.3}), progress=False, log=lambda *a: None)


@pytest.mark.slow
def test_cli_kill_and_resume_llamacpp(tmp_path, smollm2):
    """`heal sample` killed with SIGKILL mid-run resumes with no duplicate and nothing lost."""
    cfg = _config(tmp_path, "smollm2-135m", "llamacpp", k=4, n=4, max_new=64)
    cmd = [sys.executable, "-m", "heal.cli", "sample", "-c", str(cfg), "--no-progress"]
    samples = tmp_path / "run" / "samples.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if samples.exists() and len(samples.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r["key"]: r for r in read_jsonl(samples)}
    assert 3 <= len(before) < 16
    with open(samples, "a") as f:  # what a kill in the middle of a write would leave behind
        f.write('{"key": "p3/3", "text": "half a rec')
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    after = list(read_jsonl(samples))
    keys = [r["key"] for r in after]
    assert len(keys) == len(set(keys)) == 16  # no duplicate, nothing missing
    for r in after:  # nothing written before the kill was lost or rewritten
        if r["key"] in before:
            assert r == before[r["key"]]
    assert "tiers:" in res.stdout and "pass rate" in res.stdout
    assert len(list(read_jsonl(tmp_path / "run" / "tiers.jsonl"))) == 4


@pytest.mark.slow
def test_cli_end_to_end_and_errors(tmp_path, smollm2):
    cfg = _config(tmp_path, "smollm2-135m", "llamacpp", k=2, n=2, max_new=32)
    heal = [sys.executable, "-m", "heal.cli"]
    res = subprocess.run(heal + ["sample", "-c", str(cfg), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "tiers: solved" in res.stdout and "p0" in res.stdout
    shown = subprocess.run(heal + ["show", str(tmp_path / "run")], capture_output=True, text=True)
    assert shown.returncode == 0 and "tiers:" in shown.stdout
    # A bad config value: exit 2 with the field named.
    bad = subprocess.run(heal + ["sample", "-c", str(cfg), "--set", "sample.k=0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "sample.k" in bad.stderr
    # A malformed problem file: the file and line are named.
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a", "question": "q", "answer": "1"}\n{"id": "b", "question": "q"}\n')
    res = subprocess.run(heal + ["sample", "-c", str(cfg), "--set", f"data.source={broken}",
                                 "--set", f"output_dir={tmp_path / 'run2'}"], capture_output=True, text=True)
    assert res.returncode == 1 and "broken.jsonl:2: missing field 'answer'" in res.stderr
    models = subprocess.run(heal + ["models", "list"], capture_output=True, text=True)
    assert "smollm2-135m" in models.stdout and "ready" in models.stdout
