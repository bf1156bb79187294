"""The Python API mirrors the CLI: one function per command, taking a config path (or a RunConfig)
and overrides."""

import json

import pytest

import heal
from heal.store import read_jsonl


@pytest.mark.slow
def test_stage_functions_run_from_a_config_path(tmp_path, smollm2):
    src = tmp_path / "problems.jsonl"
    src.write_text(json.dumps({"id": "p0", "question": "What is 2 + 3?", "answer": "5"}) + "\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"output_dir: {tmp_path / 'run'}\ndata: {{source: {src}}}\n"
                   "teacher: {model: smollm2-135m, n_ctx: 512}\nsampling: {max_new_tokens: 16}\nsample: {k: 2}\n")
    quiet = dict(progress=False, log=lambda *a: None)
    summary = heal.sample(cfg, **quiet)
    assert summary["samples"] == 2 and len(list(read_jsonl(tmp_path / "run" / "samples.jsonl"))) == 2
    # overrides as `--set` takes them; a RunConfig works as well as a path
    hinted = heal.hint(cfg, {"guided.samples": 1, "guided.tiers": ["solved", "hard", "corner"]}, **quiet)
    assert hinted["samples"] == 1
    repaired = heal.repair(heal.load_config(cfg, {"gear.tiers": ["solved", "hard", "corner"],
                                                  "gear.continuations": 1, "gear.skip_truncated": False}), **quiet)
    failed = sum(r["correct"] is False for r in read_jsonl(tmp_path / "run" / "samples.jsonl"))
    assert repaired["trajectories"] == failed and repaired["continuations"] == failed  # one continuation each


def test_api_names_survive_importing_every_module():
    """A submodule named like an API function replaces it on first import (CI once failed on
    `heal.sample` being the module): no module may share a command's name."""
    import importlib
    import pkgutil
    import subprocess
    import sys

    names = [m.name for m in pkgutil.iter_modules(heal.__path__)]
    assert not set(names) & set(heal.__all__), "a module shadows an API function"
    code = ("import importlib, heal\n"
            f"for n in {names!r}: importlib.import_module('heal.' + n)\n"
            "bad = [n for n in heal.__all__ if n.islower() and n != '__version__' and not callable(getattr(heal, n))]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert importlib.import_module("heal.stage0").run_sample
