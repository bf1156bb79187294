"""Every generating and scoring stage over Ray (real Ray, 2 local workers, real llama.cpp engines):
hint, repair, filter and eval give the records the local launcher gives; a repair killed with SIGKILL
mid-run resumes with nothing lost and nothing duplicated; `heal run` with a Ray launcher shards every
stage (it used to sample on one local engine)."""

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
from heal.evaluation import run_eval
from heal.gear import run_repair
from heal.guided import run_guided
from heal.pure import run_filter
from heal.stage0 import run_sample
from heal.store import JsonlStore, read_jsonl

pytest.importorskip("ray", reason="launcher: ray needs `pip install -e .[ray]` (part of .[dev])")

QUIET = dict(progress=False, log=lambda *a: None)
RAY = {"kind": "ray", "workers": 2, "cpus_per_worker": 1}


def _config(tmp_path, name, launcher, extra=None):
    train = [{"id": f"p{i}", "question": f"What is {i + 1} + {i + 2}?", "answer": str(2 * i + 3)} for i in range(4)]
    test = [{"id": f"t{i}", "question": f"Add {i + 3} and {i + 7}.", "answer": str(2 * i + 10)} for i in range(3)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in train))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(p) + "\n" for p in test))
    ask = "\nGive a short derivation, then end with a line 'Answer: <number>'."
    cfg = {"output_dir": str(tmp_path / name),
           "teacher": {"model": "smollm2-135m", "engine": "llamacpp", "n_ctx": 512, "threads": 1},
           "data": {"source": str(tmp_path / "train.jsonl")}, "prompt": {"template": "{question}" + ask},
           "sampling": {"max_new_tokens": 40, "temperature": 0.8}, "sample": {"k": 2},
           "gear": {"max_trajectories": 1, "continuations": 2, "window": "all", "tiers": ["solved", "hard", "corner"],
                    "skip_truncated": False},
           # the answer in the prompt: SmolLM2 repeats it, so PURE has answer-correct candidates to score
           "guided": {"samples": 4, "tiers": ["solved", "hard", "corner"],
                      "template": "{question}\nReply with exactly this line: Answer: {answer}"},
           "pure": {"threshold": 100.0},
           "eval": {"data": {"source": str(tmp_path / "test.jsonl")}, "n_samples": 2, "greedy": True},
           "launcher": launcher, **(extra or {})}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _records(path: Path) -> dict:
    out = {}
    for r in read_jsonl(path):
        r.get("locator_info", {}).pop("seconds", None)  # wall time of the locator: not an output
        out[r["key"]] = r
    return out


STORES = ["samples.jsonl", "guided.jsonl", "repairs.jsonl", "scored.jsonl", "reference.jsonl", "eval/evals.jsonl"]


def _stages(cfg):
    run_sample(cfg, **QUIET)
    run_guided(cfg, **QUIET)
    run_repair(cfg, **QUIET)
    run_filter(cfg, **QUIET)
    run_eval(cfg, models={}, **QUIET)  # the teacher only: no student trained here


@pytest.mark.slow
def test_every_stage_over_ray_matches_local(tmp_path, smollm2):
    _stages(load_config(_config(tmp_path, "local", {"kind": "local"})))
    _stages(load_config(_config(tmp_path, "ray", RAY)))
    for name in STORES:
        local, ray = _records(tmp_path / "local" / name), _records(tmp_path / "ray" / name)
        assert local, name
        assert ray.keys() == local.keys(), name
        for key in local:
            a, b = local[key], ray[key]
            for field in a:
                if isinstance(a[field], float):  # a teacher-forced score: the same model, the same ids
                    assert b[field] == pytest.approx(a[field], rel=1e-4), (name, key, field)
                else:
                    assert b[field] == a[field], (name, key, field)
    assert not list((tmp_path / "ray").rglob("shards/*.jsonl"))


@pytest.mark.slow
def test_repair_over_ray_resumes_after_sigkill(tmp_path, smollm2):
    path = _config(tmp_path, "crash", RAY, {"gear": {"max_trajectories": 2, "continuations": 3, "window": "all",
                                                       "tiers": ["solved", "hard", "corner"], "skip_truncated": False},
                                             "sampling": {"max_new_tokens": 48, "temperature": 0.8}})
    cfg = load_config(path)
    run_sample(cfg, **QUIET)
    proc = subprocess.Popen([sys.executable, "-m", "heal.cli", "repair", "-c", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    shard_dir = tmp_path / "crash" / "shards"
    count = lambda: sum(len(p.read_text().splitlines()) for p in shard_dir.glob("repairs.*.jsonl"))  # noqa: E731
    deadline = time.time() + 300
    while time.time() < deadline and (not shard_dir.exists() or count() < 3):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "ray"), "stop", "--force"], capture_output=True)
    written = {}
    for p in shard_dir.glob("repairs.*.jsonl"):
        written.update({r["key"]: r for r in JsonlStore(p)})
    failed = {}
    for r in read_jsonl(tmp_path / "crash" / "samples.jsonl"):
        failed[r["problem_id"]] = failed.get(r["problem_id"], 0) + (r["correct"] is False)
    total = 3 * sum(min(2, n) for n in failed.values())  # failed trajectories (at most 2) x continuations
    assert 3 <= len(written) < total
    logs: list[str] = []
    run_repair(cfg, progress=False, log=logs.append)
    assert any(f"merged {len(written)} records" in line for line in logs), logs
    final = list(read_jsonl(tmp_path / "crash" / "repairs.jsonl"))
    assert len(final) == len({r["key"] for r in final}) == total
    for r in final:  # nothing the killed workers wrote was lost or redone
        if r["key"] in written:
            assert r == written[r["key"]]


@pytest.mark.slow
def test_heal_run_with_ray_shards_every_generating_stage(tmp_path, smollm2, tiny_model_dir):
    path = _config(tmp_path, "run", RAY, {
        "train": {"student": tiny_model_dir, "methods": ["sft_rs"], "batch_size": 4, "progress": False,
                  "single": {"epochs": 1, "learning_rate": 1e-4}},
    })
    res = subprocess.run([sys.executable, "-m", "heal.cli", "run", str(path)],
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    # sample, hint, repair, filter, and eval of the teacher, the base student and sft_rs
    assert out.count("ray: ") >= 6, out[-3000:]
    run = tmp_path / "run"
    assert len(list(read_jsonl(run / "samples.jsonl"))) == 8
    assert not list(run.rglob("shards/*.jsonl"))
    evals = list(read_jsonl(run / "eval" / "evals.jsonl"))
    assert {r["model"] for r in evals} == {"teacher", "base", "sft_rs"}
    assert len(evals) == len({r["key"] for r in evals}) == 3 * 3 * 3  # models x problems x (2 sampled + greedy)
