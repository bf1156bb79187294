"""repair -> hint -> filter -> inspect end to end: structure on a tiny local model, real candidates
on SmolLM2 (llama.cpp sampler, transformers scorer)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from heal.config import load_config
from heal.gear import run_repair, select_failed
from heal.guided import run_guided
from heal.pure import run_filter
from heal.stage0 import run_sample
from heal.store import read_jsonl

QUIET = dict(progress=False, log=lambda *a: None)


def test_select_failed_prefers_distinct_wrong_answers():
    mk = lambda j, pred, ok=False, trunc=False: {"sample_index": j, "pred": pred, "correct": ok, "truncated": trunc}
    samples = [mk(0, "5"), mk(1, "5"), mk(2, "5"), mk(3, "7"), mk(4, None), mk(5, "9", trunc=True), mk(6, "1", ok=True)]
    picked = select_failed(samples, 3)
    assert [s["pred"] for s in picked] == ["5", "7", None]
    assert [s["sample_index"] for s in select_failed(samples, 10)] == [0, 3, 4, 1, 2]  # truncated and correct skipped


def _cfg(tmp_path, model, engine, problems, extra=None):
    src = tmp_path / "problems.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in problems))
    cfg = {"output_dir": str(tmp_path / "run"), "data": {"source": str(src)},
           "teacher": {"model": model, "engine": engine, **({"n_ctx": 1024} if engine == "llamacpp" else {"batch_size": 4})},
           "sampling": {"max_new_tokens": 40, "temperature": 0.8}, "sample": {"k": 3},
           "gear": {"max_trajectories": 2, "continuations": 3, "window": "all", "tiers": ["solved", "hard", "corner"]},
           "guided": {"samples": 2, "tiers": ["solved", "hard", "corner"]}}
    for k, v in (extra or {}).items():
        cfg.setdefault(k, {}).update(v)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(path)


def test_repair_records_on_tiny_model(tmp_path, tiny_model_dir):
    # A random model never stops: its samples are all truncated, so repair them anyway here.
    cfg = _cfg(tmp_path, tiny_model_dir, "hf", [{"id": "a", "question": "2+3?", "answer": "5"},
                                                   {"id": "b", "question": "4+4?", "answer": "8"}],
               {"gear": {"skip_truncated": False}})
    run_sample(cfg, **QUIET)
    summary = run_repair(cfg, **QUIET)
    recs = list(read_jsonl(Path(cfg.output_dir) / "repairs.jsonl"))
    assert summary["trajectories"] == 4 and len(recs) == 12  # 2 problems x 2 trajectories x 3 continuations
    r = recs[0]
    hint_ids = r["hint_span"]
    assert r["training_ids"][: r["cut_token"]] == r["training_ids"][: r["replaced_span"][0]]
    assert r["replaced_span"][0] == r["cut_token"] == hint_ids[0]
    assert r["training_ids"][r["replaced_span"][1]:] == r["continuation_ids"]
    assert "must be 5" in r["hint_text"] or "must be 8" in r["hint_text"]
    assert "must be" not in r["training_text"]  # the student never sees the hint
    assert {"breakpoint", "step_entropy", "surges", "step_check", "derivation_ok", "seed"} <= set(r)
    # Resume: a second run repairs nothing new.
    run_repair(cfg, **QUIET)
    assert len(list(read_jsonl(Path(cfg.output_dir) / "repairs.jsonl"))) == 12
    run_guided(cfg, **QUIET)
    g = list(read_jsonl(Path(cfg.output_dir) / "guided.jsonl"))
    assert len(g) == 4 and all(x["training_ids"] == x["continuation_ids"] for x in g)


@pytest.mark.slow
def test_repair_filter_inspect_smollm2(tmp_path, smollm2):
    problems = [{"id": f"p{i}", "question": f"What is {a} + {b}?", "answer": str(a + b)}
                for i, (a, b) in enumerate([(2, 3), (4, 4), (7, 5), (12, 9)])]
    # SmolLM2 never writes \boxed{}: ask for an "Answer:" line, which the extractor also reads.
    ask = "\nGive a short derivation, then end with a line 'Answer: <number>'."
    cfg = _cfg(tmp_path, "smollm2-135m", "llamacpp", problems,
               {"pure": {"threshold": 100.0}, "prompt": {"template": "{question}" + ask},
                "guided": {"template": "{question}\n(The correct answer is {answer}.)" + ask},
                "sampling": {"max_new_tokens": 64}})
    run_sample(cfg, **QUIET)
    rep = run_repair(cfg, **QUIET)
    run_guided(cfg, **QUIET)
    assert rep["continuations"] > 0
    summary = run_filter(cfg, **QUIET)
    run = Path(cfg.output_dir)
    scored = list(read_jsonl(run / "scored.jsonl"))
    repairs = [r for r in read_jsonl(run / "repairs.jsonl") if r["correct"] and not r["duplicate"]]
    guided = [r for r in read_jsonl(run / "guided.jsonl") if r["correct"]]
    assert len(scored) == len(repairs) + len(guided) > 0  # every answer-correct candidate is scored
    for s in scored:
        assert s["S_ref"] > 0 and (s["rho_step"] is None or s["rho_step"] >= 0)
        assert s["prefilter"] is not None or s["S"] is not None
    assert summary["repair"]["candidates"] + summary["guided"]["candidates"] == len(scored)
    # Re-applying another threshold rescoring nothing: the CLI re-run is a no-op on scores.
    heal = [sys.executable, "-m", "heal.cli"]
    cfg_path = tmp_path / "cfg.yaml"
    res = subprocess.run(heal + ["filter", "-c", str(cfg_path), "--set", "pure.threshold=0.001"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout[res.stdout.index("{"):])
    assert out["threshold"] == 0.001
    assert out["repair"]["accepted"] + out["guided"]["accepted"] <= summary["repair"]["accepted"] + summary["guided"]["accepted"]
    pid = repairs[0]["problem_id"] if repairs else scored[0]["problem_id"]
    res = subprocess.run(heal + ["inspect", str(run), pid], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    png = Path(res.stdout.strip().splitlines()[-1])
    assert png.exists() and png.stat().st_size > 10_000
