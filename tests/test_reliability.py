"""Issue 13's defects, one test each: concurrent writers, silent wrong results, tracebacks where a
clear line was promised, the installed command's SIGTERM, the llama.cpp smoke decode and threads."""

import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from heal.cli import app
from heal.config import ConfigError, load_config, parse_override
from heal.engines.base import ContextError, check_prompts_fit
from heal.rundir import RunDirError, RunMismatch, changed_settings, check_output_dir, check_pinned
from heal.store import DiskFull, JsonlStore, RunLocked, StoreError, atomic_write_jsonl, read_store, run_lock

ROOT = Path(__file__).resolve().parent.parent
HEAL = Path(sys.executable).parent / "heal"  # the installed console script, as a user runs it
runner = CliRunner()


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


# -- 2. one writer per run directory ------------------------------------------------------------


def _sample_config(tmp_path, smollm2, n=3, k=2, max_new=12) -> Path:
    rows = [{"id": f"p{i}", "question": f"What is {i} + {i + 2}?", "answer": str(2 * i + 2)} for i in range(n)]
    src = tmp_path / "problems_in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"output_dir": str(tmp_path / "run"),
           "teacher": {"model": "smollm2-135m", "engine": "llamacpp", "n_ctx": 512, "threads": 1},
           "data": {"source": str(src)}, "sampling": {"max_new_tokens": max_new}, "sample": {"k": k}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_real_processes_on_one_run_directory_one_is_refused(tmp_path, smollm2):
    cfg = _sample_config(tmp_path, smollm2)
    procs = [subprocess.Popen([str(HEAL), "sample", "-c", str(cfg), "--no-progress"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    refused = next(err for (out, err), p in zip(outs, procs) if p.returncode == 1)
    assert "is being written by pid" in refused and "Traceback" not in refused
    keys = [json.loads(line)["key"] for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 6
    tiers = [json.loads(line) for line in (tmp_path / "run" / "tiers.jsonl").read_text().splitlines()]
    assert all(t["n"] == 2 for t in tiers)


def test_run_lock_is_reentrant_in_one_process_and_released_on_kill(tmp_path):
    with run_lock(tmp_path):
        with run_lock(tmp_path):  # heal run holds it around every stage it calls
            pass
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from heal.store import run_lock
        with run_lock({str(tmp_path)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
        with run_lock(tmp_path):
            pass
    holder.kill()  # kill -9: the kernel drops the flock, no stale lock is left
    holder.wait()
    with run_lock(tmp_path):
        pass


def test_a_refusal_names_a_holder_that_has_not_written_its_pid_yet(tmp_path):
    """The holder takes the lock, then writes its pid: a second process that comes in between waits a
    moment for the pid instead of saying "another process" (CI saw that race once)."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, time
        f = open({str(tmp_path / ".heal.lock")!r}, "a+")
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("locked", flush=True)
        time.sleep(0.3)
        f.write(f"pid {{os.getpid()}} (heal sample)\\n")
        f.flush()
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
            with run_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_readers_count_a_duplicated_key_once(tmp_path):
    from heal.config import RunConfig
    from heal.stage0 import summarize

    run = tmp_path / "run"
    rec = lambda j, ok: {"key": f"p0/{j}", "problem_id": "p0", "sample_index": j, "correct": ok,  # noqa: E731
                         "truncated": False, "pred": "1", "n_tokens": 3, "text": "", "token_ids": [1, 2, 3]}
    # what two unlocked writers left: every record twice
    atomic_write_jsonl(run / "samples.jsonl", [rec(0, True), rec(1, False), rec(0, True), rec(1, False)])
    cfg = RunConfig(output_dir=str(run), sample={"k": 2})
    summarize(cfg, run, [{"id": "p0", "answer": "1"}])
    [tier] = [json.loads(line) for line in (run / "tiers.jsonl").read_text().splitlines()]
    assert tier["n"] == 2 and tier["correct"] == 1
    assert len(list(JsonlStore(run / "samples.jsonl"))) == 2


# -- 3. silent wrong results ----------------------------------------------------------------------


def test_a_smaller_k_reads_the_first_k_samples_and_labels_k_honestly(tmp_path):
    from heal.config import RunConfig
    from heal.stage0 import summarize

    run = tmp_path / "run"
    recs = [{"key": f"p0/{j}", "problem_id": "p0", "sample_index": j, "correct": j >= 2, "truncated": False,
             "pred": "1", "n_tokens": 3, "text": "", "token_ids": [1, 2, 3]} for j in range(4)]
    atomic_write_jsonl(run / "samples.jsonl", recs)
    s = summarize(RunConfig(output_dir=str(run), sample={"k": 2}), run, [{"id": "p0", "answer": "1"}])
    assert s["k"] == 2 and s["samples"] == 2 and s["correct"] == 0 and s["tiers"]["corner"] == 1


def test_changing_eval_data_is_refused_once_answers_exist(tmp_path):
    from heal.config import RunConfig
    from heal.evaluation import held_out_problems

    run = tmp_path / "run"
    atomic_write_jsonl(run / "problems.jsonl", [{"id": "t0", "question": "What is 1 + 1?", "answer": "2"}])
    cfg = RunConfig(output_dir=str(run), eval={"data": {"source": "reasoning_gym:chain_sum", "size": 5, "seed": 7}})
    first = held_out_problems(cfg, log=lambda *a: None)
    assert held_out_problems(cfg, log=lambda *a: None) == first  # the same set is reused
    other = RunConfig(output_dir=str(run), eval={"data": {"source": "reasoning_gym:chain_sum", "size": 6, "seed": 8}})
    assert [p["id"] for p in held_out_problems(other, log=lambda *a: None)] != [p["id"] for p in first]  # nothing evaluated: replaced
    (run / "eval" / "evals.jsonl").write_text(json.dumps({"key": "teacher@base/x/0"}) + "\n")
    with pytest.raises(RunMismatch, match="another held-out set"):
        held_out_problems(cfg, log=lambda *a: None)


class _Engine:
    def __init__(self, ctx):
        self.context_length = ctx


def test_a_prompt_longer_than_the_context_is_an_error_before_generation():
    with pytest.raises(ContextError, match="longest: p1, 9000 tokens"):
        check_prompts_fit(_Engine(8192), [("p0", [1] * 100), ("p1", [1] * 9000)], 256)
    with pytest.raises(ContextError, match="raise the context to at least 8384"):  # a 32k-style trace cut short
        check_prompts_fit(_Engine(8192), [("p0", [1] * 8000)], 384)
    check_prompts_fit(_Engine(8192), [("p0", [1] * 7808)], 384)  # exactly fits
    check_prompts_fit(_Engine(None), [("p0", [1] * 10**6)], 384)  # a server that does not say: unchecked


def test_hf_engine_refuses_a_prompt_past_its_context(tiny_model_dir):
    from heal.engines.base import SamplingParams
    from heal.engines.hf import HFEngine

    eng = HFEngine(tiny_model_dir)
    assert eng.context_length == 1024
    with pytest.raises(ContextError, match="1100 tokens"):
        eng.generate([[5] * 1100], SamplingParams(max_new_tokens=4))
    [[c]] = eng.generate([[5] * 1020], SamplingParams(temperature=0.0, max_new_tokens=50), record_entropy=False)
    assert len(c.token_ids) <= 4  # capped at the context, reported as a length stop where it hit it


def test_later_stages_refuse_another_teacher_or_prompt(tmp_path):
    from heal.config import RunConfig

    run = tmp_path / "run"
    run.mkdir()
    pinned = RunConfig(teacher={"model": "a", "base_url": "http://localhost:8000", "engine": "openai"})
    (run / "sample_config.json").write_text(json.dumps({s: pinned.model_dump(mode="json")[s]
                                                        for s in ("teacher", "prompt", "sampling")}))
    same = RunConfig(output_dir=str(run), teacher={"model": "a", "base_url": "http://127.0.0.1:8000",
                                                   "engine": "openai", "concurrency": 16})
    for stage in ("hint", "repair", "filter", "train", "eval"):
        check_pinned(same, run, stage)  # transport and throughput settings are not a change
    other = same.model_copy(update={"teacher": same.teacher.model_copy(update={"model": "b"})})
    with pytest.raises(RunMismatch, match="teacher.model"):
        check_pinned(other, run, "repair")
    hotter = RunConfig(output_dir=str(run), teacher=same.teacher, sampling={"temperature": 1.0})
    with pytest.raises(RunMismatch, match="sampling.temperature"):
        check_pinned(hotter, run, "hint")
    check_pinned(hotter, run, "eval")  # eval pins its own sampling (eval/settings.json)
    assert changed_settings(pinned.model_dump(mode="json"), same.model_dump(mode="json"), ("teacher",)) == []


def test_boolean_where_a_number_belongs_is_refused():
    with pytest.raises(ConfigError, match="sample.k: .*boolean"):
        load_config(None, {"sample.k": True})
    assert load_config(None, {"gear.skip_truncated": False}).gear.skip_truncated is False


def test_final_json_paths_resolve_from_any_working_directory(tmp_path, monkeypatch):
    from heal.evaluation import trained_models

    run = tmp_path / "run"
    (run / "checkpoints" / "heal" / "stage-III").mkdir(parents=True)
    (run / "checkpoints" / "final.json").write_text(json.dumps({"heal": "checkpoints/heal/stage-III"}))
    monkeypatch.chdir("/")
    assert trained_models(run) == {"heal": str((run / "checkpoints" / "heal" / "stage-III").resolve())}
    (run / "checkpoints" / "final.json").write_text(json.dumps({"sft_rs": "checkpoints/sft_rs/stage-single"}))
    with pytest.raises(FileNotFoundError, match="weights of sft_rs"):
        trained_models(run)


def test_report_of_a_typo_is_an_error_not_an_empty_report(tmp_path):
    r = _cli("report", tmp_path / "no-such-run")
    assert r.exit_code == 1 and "is not a directory" in r.output
    r = _cli("report", tmp_path)
    assert r.exit_code == 1 and "not a run directory" in r.output
    assert not (tmp_path / "report.md").exists()


# -- 4. one line instead of a traceback -------------------------------------------------------------


@pytest.mark.parametrize("override, message", [
    ("sample.k=[1", "not valid YAML"),
    ("output_dir.x=1", "output_dir is a value, not a section"),
])
def test_bad_overrides_are_one_line(override, message):
    r = _cli("config", "--set", override)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("template, message", [
    ("{question} in \\boxed{}", "not a valid template"),
    ("{question}; the answer is {answer}", "uses {answer}"),
])
def test_bad_prompt_templates_fail_at_load_before_any_model(template, message):
    with pytest.raises(ConfigError, match="prompt.template"):
        load_config(None, {"prompt.template": template})
    r = _cli("config", "--set", f"prompt.template={json.dumps(template)}")
    assert r.exit_code == 2 and message in r.output


def test_output_dir_that_is_a_file_or_under_one_is_one_line(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        check_output_dir(f)
    with pytest.raises(RunDirError, match="lies under .*file, which is a file"):
        check_output_dir(f / "run")
    with pytest.raises(RunDirError, match="cannot be created"):
        check_output_dir(Path("/proc/heal-run"))  # a read-only file system, even for root
    r = _cli("sample", "--set", f"output_dir={f}", "--set", "data.source=reasoning_gym:chain_sum")
    assert r.exit_code == 1 and "is a file" in r.output and "resumes" not in r.output


def test_a_store_line_without_key_names_its_line(tmp_path):
    p = tmp_path / "samples.jsonl"
    p.write_text('{"key": "a"}\n{"nokey": 1}\n')
    with pytest.raises(StoreError, match=r"samples.jsonl:2: a store record needs a string 'key'"):
        JsonlStore(p)
    p.write_bytes(b'{"key": "a"}\n{"key": "\xff"}\n')
    with pytest.raises(StoreError, match=r"samples.jsonl:2: not valid UTF-8"):
        list(read_store(p))


def test_a_full_disk_keeps_every_acknowledged_record(tmp_path, monkeypatch):
    store = JsonlStore(tmp_path / "s.jsonl")
    store.append([{"key": "a"}])
    real_write = os.write
    calls = []

    def half_then_full(fd, data):  # the disk fills up in the middle of a batch
        calls.append(1)
        if len(calls) == 1:
            return real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(DiskFull, match="no space left.*every record written before is kept"):
        store.append([{"key": "b"}, {"key": "c"}])
    monkeypatch.setattr(os, "write", real_write)
    assert [r["key"] for r in JsonlStore(tmp_path / "s.jsonl")] == ["a"]  # whole lines only


def test_a_real_full_disk_is_one_line(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        store = JsonlStore(mnt / "s.jsonl")
        with pytest.raises(DiskFull):
            for i in range(1000):
                store.append([{"key": str(i), "pad": "x" * 1000}])
        n = len(list(JsonlStore(mnt / "s.jsonl")))
        assert 0 < n < 1000 and n == len(store)
    finally:
        subprocess.run(["umount", str(mnt)])


# -- 5. smaller gaps ------------------------------------------------------------------------------


def test_every_command_takes_both_config_forms(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("output_dir: somewhere\n")
    for args in (["config", cfg], ["config", "-c", cfg]):
        r = _cli(*args)
        assert r.exit_code == 0 and "output_dir: somewhere" in r.output
    for cmd in ("run", "sample", "repair", "hint", "filter", "train", "eval"):
        for args in ([cmd, tmp_path / "missing.yaml"], [cmd, "-c", tmp_path / "missing.yaml"]):
            r = _cli(*args)
            assert r.exit_code == 2 and "config file not found" in r.output, (args, r.output)


def test_installed_command_stops_on_sigterm_like_ctrl_c(tmp_path, smollm2):
    """The console script runs heal.cli:main (which installs the SIGTERM handler), not the bare app:
    a real `heal sample` gets SIGTERM mid-run, exits 143 (not killed by the signal) and keeps its samples."""
    cfg = _sample_config(tmp_path, smollm2, n=40, k=2, max_new=24)
    proc = subprocess.Popen([str(HEAL), "sample", "-c", str(cfg), "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    samples = tmp_path / "run" / "samples.jsonl"
    end = time.time() + 300
    while time.time() < end and not (samples.exists() and samples.stat().st_size > 0):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, err[-2000:])
    kept = len(list(read_store(samples)))
    assert 0 < kept < 80


def test_default_threads_leave_busy_cores_alone():
    from heal.engines.llamacpp import default_threads

    assert default_threads(cores=2, load=0.1) == 2
    assert default_threads(cores=2, load=1.0) == 1
    assert default_threads(cores=2, load=3.7) == 1
    assert default_threads(cores=16, load=4.2) == 12


def test_default_threads_do_not_count_own_load(monkeypatch):
    """The load average counts this process too (a fresh process busy importing): only what other
    processes add takes a core away."""
    from heal.engines import llamacpp

    monkeypatch.setattr(llamacpp.os, "getloadavg", lambda: (0.9, 0.5, 0.2))
    monkeypatch.setattr(llamacpp, "own_load", lambda: 0.8)  # all of it ours: both cores are free
    assert llamacpp.default_threads(cores=2) == 2
    monkeypatch.setattr(llamacpp, "own_load", lambda: 0.0)  # all of it another process's
    assert llamacpp.default_threads(cores=2) == 1
    monkeypatch.setattr(llamacpp.os, "getloadavg", lambda: (1.9, 1.0, 0.5))
    monkeypatch.setattr(llamacpp, "own_load", lambda: 0.8)  # another process busy on one core
    assert llamacpp.default_threads(cores=2) == 1
    monkeypatch.setattr(llamacpp.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    monkeypatch.setattr(llamacpp, "own_load", lambda: 0.9)  # our share overestimated: never below 0
    assert llamacpp.default_threads(cores=2) == 2


def test_own_load_weighs_cpu_as_the_load_average_does():
    from heal.engines.llamacpp import own_load

    # one core busy for 10 s: the 1-minute average has caught up 1 - exp(-10/60) of it
    assert own_load(cpu_s=10.0, age_s=10.0) == pytest.approx(1 - math.exp(-1 / 6))
    assert own_load(cpu_s=600.0, age_s=600.0) == pytest.approx(1.0, abs=1e-4)  # caught up
    assert own_load(cpu_s=1.0, age_s=100.0) == pytest.approx(0.01 * (1 - math.exp(-100 / 60)))  # mostly idle
    assert 0.0 <= own_load() < len(os.sched_getaffinity(0)) + 1  # this process, read from /proc


def test_doctor_smoke_decode_passes_here_and_names_a_crash(smollm2, monkeypatch):
    from heal import doctor

    ok, line = doctor.smoke_decode(smollm2.gguf)
    assert ok, line
    monkeypatch.setattr(doctor, "_SMOKE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    ok, line = doctor.smoke_decode(smollm2.gguf)
    assert not ok and "crashed (SIGSEGV)" in line and "GGML_NATIVE=OFF" in line
