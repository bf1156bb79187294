"""`launcher: ray` on a local Ray cluster with 2 workers (real Ray, real llama.cpp engines)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from heal.config import load_config
from heal.runs import merge_shards
from heal.stage0 import run_sample
from heal.store import JsonlStore, read_jsonl

pytest.importorskip("ray", reason="launcher: ray needs `pip install -e .[ray]` (part of .[dev])")


def _config(tmp_path, run_name, launcher, n=6, k=2, max_new=40):
    src = tmp_path / "problems_in.jsonl"
    src.write_text("".join(json.dumps({"id": f"p{i}", "question": f"What is {i} + {i + 5}?", "answer": str(2 * i + 5)})
                           + "\n" for i in range(n)))
    cfg = {"output_dir": str(tmp_path / run_name),
           "teacher": {"model": "smollm2-135m", "engine": "llamacpp", "n_ctx": 512, "threads": 1},
           "data": {"source": str(src)}, "sampling": {"max_new_tokens": max_new, "temperature": 0.8},
           "sample": {"k": k}, "launcher": launcher}
    path = tmp_path / f"{run_name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_merge_shards_is_idempotent(tmp_path):
    main = JsonlStore(tmp_path / "samples.jsonl")
    main.append([{"key": "a/0", "v": 1}])
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "samples.0.jsonl").write_text('{"key": "a/0", "v": 1}\n{"key": "a/1", "v": 2}\n')
    (shards / "samples.1.jsonl").write_text('{"key": "b/0", "v": 3}\n{"key": "b/1", "v": 4, "half')  # killed mid-line
    assert merge_shards(tmp_path, ["samples.jsonl"], log=lambda *a: None) == 2
    assert merge_shards(tmp_path, ["samples.jsonl"], log=lambda *a: None) == 0
    assert [r["key"] for r in read_jsonl(main.path)] == ["a/0", "a/1", "b/0"]
    assert not list(shards.glob("*.jsonl"))


@pytest.mark.slow
def test_ray_matches_local_and_resumes_after_a_crash(tmp_path, smollm2):
    quiet = lambda *a: None  # noqa: E731
    # The same run, locally and over 2 Ray workers: the same samples (seeds are per problem and index).
    local = run_sample(load_config(_config(tmp_path, "local", {"kind": "local"})), progress=False, log=quiet)
    ray_cfg = _config(tmp_path, "ray", {"kind": "ray", "workers": 2, "cpus_per_worker": 1})
    summary = run_sample(load_config(ray_cfg), progress=False, log=quiet)
    assert summary == local
    by_key = lambda run: {r["key"]: (r["text"], r["seed"]) for r in read_jsonl(tmp_path / run / "samples.jsonl")}  # noqa: E731
    assert by_key("ray") == by_key("local") and len(by_key("ray")) == 12
    assert not list((tmp_path / "ray" / "shards").glob("*.jsonl"))

    # A crash: the driver and its workers are killed (SIGKILL to the whole process group) while the
    # workers write their shards. The re-run merges the shards and samples only what is missing.
    crash_cfg = _config(tmp_path, "crash", {"kind": "ray", "workers": 2, "cpus_per_worker": 1}, n=8, k=3, max_new=64)
    proc = subprocess.Popen([sys.executable, "-m", "heal.cli", "sample", "-c", str(crash_cfg), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    shard_dir = tmp_path / "crash" / "shards"
    deadline = time.time() + 300
    count = lambda: sum(len(p.read_text().splitlines()) for p in shard_dir.glob("samples.*.jsonl"))  # noqa: E731
    while time.time() < deadline and (not shard_dir.exists() or count() < 4):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "ray"), "stop", "--force"], capture_output=True)  # workers outside the group, if any
    written = {}
    for p in shard_dir.glob("samples.*.jsonl"):
        written.update({r["key"]: r for r in JsonlStore(p)})
    assert 4 <= len(written) < 24
    logs: list[str] = []
    run_sample(load_config(crash_cfg), progress=False, log=logs.append)
    assert any(f"merged {len(written)} records" in line for line in logs), logs
    assert any(f"{24 - len(written)} to go" in line for line in logs), logs
    final = list(read_jsonl(tmp_path / "crash" / "samples.jsonl"))
    assert len(final) == len({r["key"] for r in final}) == 24
    for r in final:  # nothing the crashed workers wrote was lost or redone
        if r["key"] in written:
            assert r == written[r["key"]]
