"""Typed records: the key scheme, file:line on a bad record, and every committed run directory loads."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from heal import records as R
from heal.runs import load_stage0

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "experiments" / "runs"

# which type each store of a run directory holds
KINDS = {"problems.jsonl": (R.PROBLEM, False), "samples.jsonl": (R.SAMPLE, True), "tiers.jsonl": (R.TIER, False),
         "guided.jsonl": (R.CANDIDATE, True), "repairs.jsonl": (R.CANDIDATE, True), "scored.jsonl": (R.SCORED, True),
         "reference.jsonl": (R.REFERENCE, True), "evals.jsonl": (R.EVAL, True)}
TRAINING_SETS = {"D1", "D2", "D3", "D2raw", "D3raw", "ALL"}


def test_keys_are_built_and_split_in_one_place():
    s = R.sample_key("chain_sum-7", 3)
    assert s == "chain_sum-7/3"
    r = R.repair_key(s, 11)
    assert r == "chain_sum-7/3/gear/11" and R.repair_source(r) == s and R.continuation_index(r) == 11
    g = R.guided_key("chain_sum-7", 2)
    assert g == "chain_sum-7/guided/2" and R.continuation_index(g) == 2
    # a problem id that itself holds a slash still splits right
    assert R.repair_source(R.repair_key(R.sample_key("a/b", 0), 1)) == "a/b/0"
    ref = R.reference_key("qwen@teacher", "p|1")
    assert R.reference_problem(ref, "qwen@teacher") == "p|1" and R.reference_problem(ref, "other@hf") is None
    assert R.eval_key("heal", "abc", "t1", "greedy") == "heal@abc/t1/greedy"


def test_hint_free_start_needs_no_faked_cut():
    assert R.hint_free_start({"kind": "guided"}) == 0
    assert R.hint_free_start({"kind": "guided", "cut_token": 0, "replaced_span": [0, 0]}) == 0  # older runs
    assert R.hint_free_start({"kind": "repair", "replaced_span": [40, 47]}) == 47


def _sample(**over):
    rec = {"key": "p/0", "problem_id": "p", "sample_index": 0, "text": "1 + 1 = 2", "token_ids": [5, 6],
           "n_tokens": 2, "truncated": False, "pred": "2", "correct": True}
    return rec | over


def test_a_bad_record_is_one_line_naming_file_line_and_field(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps(_sample()) + "\n" + json.dumps(_sample(key="p/1", sample_index="1")) + "\n")
    with pytest.raises(R.RecordError, match=r"samples.jsonl:2: SampleRecord field 'sample_index': input should be a valid integer"):
        list(R.read_records(path, R.SAMPLE))
    path.write_text(json.dumps({k: v for k, v in _sample().items() if k != "token_ids"}) + "\n")
    with pytest.raises(R.RecordError, match=r"samples.jsonl:1: SampleRecord field 'token_ids': field required"):
        list(R.read_records(path, R.SAMPLE))
    # extra fields are kept (records grow), and a valid record comes back as it is
    ok = _sample(entropy=[0.5, 1.0], something_new={"a": 1})
    path.write_text(json.dumps(ok) + "\n")
    assert list(R.read_records(path, R.SAMPLE)) == [ok]


def test_heal_repair_on_a_corrupt_store_prints_file_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "problems.jsonl").write_text(json.dumps({"id": "p", "question": "1+1?", "answer": "2"}) + "\n")
    (run / "samples.jsonl").write_text(json.dumps(_sample(correct="yes")) + "\n")
    (run / "tiers.jsonl").write_text(json.dumps({"problem_id": "p", "n": 1, "correct": 0, "tier": "corner"}) + "\n")
    res = subprocess.run([sys.executable, "-m", "heal.cli", "repair", "--set", f"output_dir={run}"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert f"{run / 'samples.jsonl'}:1: SampleRecord field 'correct'" in res.stderr, res.stderr


def _committed_stores():
    for path in sorted(RUNS.rglob("*.jsonl")):
        if "shards" in path.parts or path.name.startswith("."):
            continue
        if path.parent.name == "data" and path.stem in TRAINING_SETS:
            yield path, (R.EXAMPLE, True)
        elif path.name in KINDS:
            yield path, KINDS[path.name]


def test_every_committed_run_loads():
    stores = list(_committed_stores())
    assert len(stores) > 20
    counts = {}
    for path, (kind, keyed) in stores:
        counts[path] = sum(1 for _ in R.read_records(path, kind, store=keyed))
    assert all(counts.values()), [p for p, n in counts.items() if not n]
    # and the runs load the way stages read them
    for run in ("gear-probe", "pace-qwen0.5b", "pace-smollm2"):
        problems, by_problem, tiers = load_stage0(RUNS / run)
        assert problems and tiers and sum(map(len, by_problem.values())) > 0


def test_stage_plans_are_typed():
    from heal.config import RunConfig
    from heal.pace import stage_plan

    sizes = {"D1": 40, "D2": 8, "D3": 12}
    for method in ("heal", "sft_rs", "heal_continuous"):
        for stage in stage_plan(method, sizes, RunConfig()):
            R.check(stage, R.STAGE, method)
