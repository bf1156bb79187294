"""`eval.benchmarks`: several held-out benchmarks in one run, each with its own n, set, contamination
report, settings pin, records and summary; and the single `eval.data` set unchanged without them.
No model is loaded: every answer is a record written here, so `heal eval` finds nothing left to do."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import load_echo
from typer.testing import CliRunner

from heal.cli import app
from heal.config import RunConfig, echo_config, load_config
from heal.evaluation import eval_benchmarks, held_out_problems, run_eval, summarize_eval
from heal.rundir import RunMismatch
from heal.store import atomic_write_jsonl, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
TRAIN_Q = "Find the number of ordered pairs of positive integers whose product is twelve and whose sum is even."


def write_math500(path: Path) -> Path:
    """MATH-500's layout; the last problem is a copy of the training question (dropped)."""
    rows = [{"unique_id": "p1", "problem": "What is $1 + 1$?", "answer": "2"},
            {"unique_id": "p2", "problem": "What is $2 + 3$?", "answer": "5"},
            {"unique_id": "p3", "problem": "What is $4 \\cdot 4$?", "answer": "16"},
            {"unique_id": "copy", "problem": TRAIN_Q, "answer": "4"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_gpqa(path: Path, extra: bool = False) -> Path:
    """GPQA's CSV layout; its ids p1, p2 are the same as two MATH-500 ids."""
    rows = [["p1", "Which gas makes up most of the air?", "nitrogen", "oxygen", "argon", "helium"],
            ["p2", "Which planet is the largest?", "Jupiter", "Saturn", "Neptune", "Mars"]]
    rows += [["p3", "Which metal is liquid at room temperature?", "mercury", "iron", "lead", "tin"]] if extra else []
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Record ID", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"])
        w.writerows(rows)
    return path


def bench_config(tmp_path: Path) -> RunConfig:
    """math500 with n = 2 and a greedy answer; gpqa with eval.n_samples (3) and no greedy answer.
    Neither engine could load here (the teacher's server has no address; vllm may be missing)."""
    atomic_write_jsonl(tmp_path / "run" / "problems.jsonl", [{"id": "x1", "question": TRAIN_Q, "answer": "4"}])
    return load_config(None, {
        "output_dir": str(tmp_path / "run"), "teacher.engine": "openai", "eval.engine": "vllm", "eval.n_samples": 3,
        "eval.benchmarks": {
            "math500": {"data": {"source": f"math500:{write_math500(tmp_path / 'math500.jsonl')}"}, "n_samples": 2},
            "gpqa": {"data": {"source": f"gpqa:{write_gpqa(tmp_path / 'gpqa.csv')}"}, "greedy": False}}})


# Right (1) or wrong (0) per model, problem and sample.
MATH = {"teacher": {"p1": [1, 1], "p2": [1, 0], "p3": [0, 0]},
        "sft_rs": {"p1": [1, 0], "p2": [0, 0], "p3": [0, 0]},
        "heal": {"p1": [1, 1], "p2": [1, 1], "p3": [0, 1]}}
GPQA = {"teacher": {"p1": [1, 1, 1], "p2": [0, 0, 0]},
        "sft_rs": {"p1": [1, 0, 0], "p2": [0, 0, 0]},
        "heal": {"p1": [1, 1, 0], "p2": [1, 0, 0]}}


def record(model: str, pid: str, j, pred: str, correct: bool) -> dict:
    tag = "teacher" if model == "teacher" else "base"
    return {"key": f"{model}@{tag}/{pid}/{j}", "model": model, "tag": tag, "problem_id": pid, "sample": j, "pred": pred,
            "correct": correct, "truncated": False, "n_tokens": 10, "derivation_ok": correct, "text": ""}


def write_records(cfg: RunConfig) -> None:
    """Each benchmark's answers in its own store (RUN/eval/<name>/evals.jsonl), plus one record past
    each benchmark's n, which its summary must leave out."""
    math, gpqa = eval_benchmarks(cfg)
    gold = {p["id"]: p["answer"] for p in read_jsonl(gpqa.dir / "problems.jsonl")}
    other = {pid: next(x for x in "ABCD" if x != g) for pid, g in gold.items()}  # a wrong option
    recs = [record(m, pid, j, "2" if pid == "p1" else "5" if c else "7", bool(c))
            for m, rows in MATH.items() for pid, row in rows.items() for j, c in enumerate(row)]
    recs += [record(m, pid, "greedy", "2", pid == "p1") for m in MATH for pid in ("p1", "p2", "p3")]
    recs.append(record("heal", "p3", 2, "7", False))  # sample index 2: past math500's n = 2
    atomic_write_jsonl(math.store, recs)
    recs = [record(m, pid, j, gold[pid] if c else other[pid], bool(c))
            for m, rows in GPQA.items() for pid, row in rows.items() for j, c in enumerate(row)]
    # heal on gpqa p2 answers gold, "(X)", "X" for a wrong X: two votes for X, so its maj@3 misses p2.
    recs[[r["key"] for r in recs].index("heal@base/p2/1")]["pred"] = f"({other['p2']})"
    recs.append(record("heal", "p2", 3, gold["p2"], True))  # sample index 3: past gpqa's n = 3
    atomic_write_jsonl(gpqa.store, recs)


def evaluated_run(tmp_path: Path) -> tuple[RunConfig, dict, list[str]]:
    cfg = bench_config(tmp_path)
    for b in eval_benchmarks(cfg):  # the held-out sets first: gpqa's gold letters come from its shuffle
        held_out_problems(cfg, lambda *a: None, b)
    write_records(cfg)
    logs: list[str] = []
    none = str(tmp_path / "none")
    out = run_eval(cfg, models={"sft_rs": none, "heal": none}, progress=False, log=logs.append)
    return cfg, out, logs


def test_benchmarks_resolve_their_n_greedy_and_folder(tmp_path):
    cfg = bench_config(tmp_path)
    math, gpqa = eval_benchmarks(cfg)
    assert (math.name, math.n_samples, math.greedy, math.dir) == ("math500", 2, True, tmp_path / "run" / "eval" / "math500")
    assert (gpqa.name, gpqa.n_samples, gpqa.greedy, gpqa.field) == ("gpqa", 3, False, "eval.benchmarks.gpqa.data")
    [single] = eval_benchmarks(load_config(None, {"output_dir": str(tmp_path / "run"), "eval.n_samples": 5}))
    assert (single.name, single.n_samples, single.dir, single.field) == (None, 5, tmp_path / "run" / "eval", "eval.data")


def test_two_benchmarks_each_with_its_n_tiers_and_pairing(tmp_path):
    cfg, out, logs = evaluated_run(tmp_path)
    assert [x for x in logs if x.endswith("done, skipping")] == [f"eval {m}: done, skipping" for m in ("teacher", "sft_rs", "heal")]
    eval_dir = tmp_path / "run" / "eval"
    assert json.loads((eval_dir / "summary.json").read_text()) == out and set(out) == {"benchmarks"}
    assert not (eval_dir / "evals.jsonl").exists() and not (eval_dir / "problems.jsonl").exists()
    for name in ("math500", "gpqa"):
        assert {p.name for p in (eval_dir / name).iterdir()} == {"problems.jsonl", "contamination.json", "settings.json", "evals.jsonl"}
    # Contamination per benchmark: math500's copy of the training question is dropped, gpqa loses nothing.
    c = {name: json.loads((eval_dir / name / "contamination.json").read_text()) for name in ("math500", "gpqa")}
    assert (c["math500"]["benchmark"], c["math500"]["test"], c["math500"]["dropped"]) == ("math500", 4, 1)
    assert (c["gpqa"]["benchmark"], c["gpqa"]["test"], c["gpqa"]["dropped"]) == ("gpqa", 2, 0)

    m = out["benchmarks"]["math500"]
    assert m["tiers"] == {"solved": 2, "corner": 1}  # teacher 2/2, 1/2, 0/2
    heal = m["models"]["heal"]  # 2/2, 2/2, 1/2 (the record at sample index 2 left out)
    assert (heal["pass@1"], heal["se"], heal["n"], heal["greedy"]) == (pytest.approx(5 / 6), pytest.approx(1 / 6), 2, pytest.approx(1 / 3))
    assert heal["avg@n"]["n"] == 2 and heal["maj@k"]["mean"] == pytest.approx(2 / 3)  # p3: "7" then "5", the tie to "7"
    assert m["models"]["sft_rs"]["pass@1"] == pytest.approx(1 / 6) and m["models"]["teacher"]["pass@1"] == 0.5
    d = heal["vs_sft_rs"]  # per problem 0.5, 1, 0.5
    assert (d["diff"], d["se"], d["problems"]) == (pytest.approx(2 / 3), pytest.approx(1 / 6), 3)
    assert d["per_tier"]["solved"] == {"diff": pytest.approx(0.75), "se": pytest.approx(0.25), "problems": 2}
    assert d["per_tier"]["corner"] == {"diff": 0.5, "se": None, "problems": 1}
    assert m["models"]["sft_rs"]["vs_heal"]["diff"] == pytest.approx(-2 / 3)

    g = out["benchmarks"]["gpqa"]
    assert g["tiers"] == {"solved": 1, "corner": 1}  # teacher 3/3, 0/3
    heal = g["models"]["heal"]  # p1 2/3, p2 1/3 (the record at sample index 3 left out); no greedy answer
    assert (heal["pass@1"], heal["se"], heal["n"], heal["greedy"]) == (pytest.approx(0.5), pytest.approx(1 / 6), 3, None)
    assert heal["per_tier"]["solved"]["pass@1"] == pytest.approx(2 / 3) and heal["per_tier"]["corner"]["pass@1"] == pytest.approx(1 / 3)
    assert heal["maj@k"] == {"k": 3, "mean": 0.5, "se": 0.5, "problems": 2}  # p1 gold 2-1; p2 "(X)" and "X" 2-1
    assert heal["pass@k"]["2"]["mean"] == pytest.approx((1 + 2 / 3) / 2)  # p1 c=2: 1; p2 c=1: 1 - C(2,2)/C(3,2)
    assert heal["vs_sft_rs"]["diff"] == pytest.approx(1 / 3) and heal["vs_sft_rs"]["se"] == pytest.approx(0.0)
    assert heal["vs_sft_rs"]["per_tier"]["corner"] == {"diff": pytest.approx(1 / 3), "se": None, "problems": 1}


def test_changed_benchmark_data_is_refused_once_answered(tmp_path):
    cfg, _, _ = evaluated_run(tmp_path)
    hot = cfg.model_copy(deep=True)  # each benchmark pinned the settings of its answers
    hot.sampling.temperature = 1.0
    with pytest.raises(RunMismatch, match=r"eval/math500/evals.jsonl was evaluated with different settings "
                                          r"\(sampling.temperature, pinned in .*eval/math500/settings.json\)"):
        run_eval(hot, models={}, progress=False, log=lambda *a: None)
    write_gpqa(tmp_path / "gpqa.csv", extra=True)
    with pytest.raises(RunMismatch, match=r"eval/gpqa/problems.jsonl holds another held-out set than "
                                          r"eval.benchmarks.gpqa.data gives now \(2 problems stored, 3 now\)"):
        run_eval(cfg, models={}, progress=False, log=lambda *a: None)
    # A benchmark with no answers yet takes its new data: its set is replaced.
    fresh = cfg.model_copy(deep=True)
    fresh.eval.benchmarks = {"gpqa2": cfg.eval.benchmarks["gpqa"]}
    [b] = eval_benchmarks(fresh)
    atomic_write_jsonl(b.dir / "problems.jsonl", [{"id": "old", "question": "an older set", "answer": "A"}])
    logs = []
    assert [p["id"] for p in held_out_problems(fresh, logs.append, b)] == ["p1", "p2", "p3"]
    assert "eval: eval.benchmarks.gpqa2.data changed and nothing was evaluated yet" in logs[0]


def test_report_and_view_show_one_table_per_benchmark(tmp_path):
    from heal.reporting import write_report
    from heal.view import collect, render_report

    cfg, _, _ = evaluated_run(tmp_path)
    run = tmp_path / "run"
    [md_path] = write_report([run])
    md = md_path.read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["methods"] == {} and list(summary["benchmarks"]) == ["math500", "gpqa"]
    assert summary["benchmarks"]["gpqa"]["methods"]["heal"]["pass@1"] == pytest.approx(0.5)
    assert md.index("## Benchmark math500") < md.index("## Benchmark gpqa")
    math_part, gpqa_part = md.split("## Benchmark gpqa")
    assert ("Held-out set math500: 4 problems checked against 1 training problems; 8-gram overlap: 1, "
            "32-gram overlap: 1; dropped (8-grams): 1.") in math_part
    assert "| method | pass@1 | ± se | n | greedy | solved (2) | corner (1) |" in math_part
    assert "| heal | 0.833 | 0.167 | 2 | 0.333 | 1.000 | 0.500 | 1.000 | 1.000 | - (0) |" in math_part
    assert "| method | avg@2 | ± se | maj@2 | pass@2 | mean tokens | truncated |" in math_part
    assert "| heal | 0.833 | 0.167 | 0.667 | 1.000 | 10.0 | 0.000 |" in math_part
    assert "| heal | +0.667 ± 0.167 | +0.750 ± 0.250 | +0.500 ± - |" in math_part
    assert "| heal | 0.500 | 0.167 | 3 | - | 0.667 | 0.333 | 1.000 | 1.000 | - (0) |" in gpqa_part
    assert "| method | avg@3 | ± se | maj@3 | pass@2 | pass@3 | mean tokens | truncated |" in gpqa_part
    assert "| heal | 0.500 | 0.167 | 0.500 | 0.833 | 1.000 | 10.0 | 0.000 |" in gpqa_part
    assert "| heal | +0.333 ± 0.000 | +0.333 ± - | +0.333 ± - |" in gpqa_part
    for name in ("math500", "gpqa"):
        assert (run / "report" / f"accuracy-{name}.png").stat().st_size > 1000 and f"report/accuracy-{name}.png" in md

    # heal view: the evaluation tab reads each benchmark's records, ids shown with their benchmark.
    echo_config(cfg, run)  # the config the view reads the benchmarks and their n from
    ev = collect(run)["evals"]
    teacher = {(r["pid"], r["sample"]): r["tier"] for r in ev["records"] if r["model"] == "teacher"}
    assert teacher[("math500/p2", 1)] == "solved" and teacher[("gpqa/p2", 0)] == "corner"
    assert len(ev["records"]) == 3 * (3 * 3) + 3 * (2 * 3)  # math500: 3 problems x (2 + greedy); gpqa: 2 x 3
    assert ev["problems"]["gpqa/p1"]["q"].startswith("Which gas") and ev["problems"]["math500/p1"]["a"] == "2"
    html = render_report(run)
    assert "<h2>Benchmark math500</h2>" in html and "gpqa: pass@1 per method and teacher tier" in html


def test_heal_config_set_adds_a_benchmark():
    runner = CliRunner()
    res = runner.invoke(app, ["config", "--set", "eval.benchmarks.aime.data.source=aime:/data/aime24.jsonl",
                              "--set", "eval.benchmarks.aime.n_samples=16"])
    assert res.exit_code == 0, res.output
    ec = yaml.safe_load(res.output)["eval"]
    assert ec["benchmarks"]["aime"]["n_samples"] == 16 and ec["benchmarks"]["aime"]["greedy"] is None
    assert ec["benchmarks"]["aime"]["data"]["source"] == "aime:/data/aime24.jsonl"
    bad = runner.invoke(app, ["config", "--set", "eval.benchmarks.aime.n_samples=16"])
    assert bad.exit_code != 0 and "eval.benchmarks.aime.data: Field required" in bad.output


# Keys whose committed values came from an older step checker (stepcheck.equations has changed since
# the run was evaluated), not from anything the evaluation summary computes differently.
STEP_CHECKER_KEYS = {"equations", "equation_accuracy"}


def assert_same(old, new, path=""):
    """Every value of the committed summary `old` is in `new` unchanged (new keys may be added)."""
    if isinstance(old, dict):
        for k, v in old.items():
            if k not in STEP_CHECKER_KEYS:
                assert k in new, f"{path}/{k} is missing"
                assert_same(v, new[k], f"{path}/{k}")
    else:
        assert new == (pytest.approx(old) if isinstance(old, float) else old), path


def test_committed_single_set_run_summarizes_unchanged(tmp_path):
    """experiments/runs/pace-qwen0.5b (no eval.benchmarks): its committed eval records summarize to its
    committed eval/summary.json and docs/results' copy, in the same layout."""
    src = ROOT / "experiments" / "runs" / "pace-qwen0.5b"
    shutil.copytree(src / "eval", tmp_path / "run" / "eval")
    cfg = load_echo(src / "config.yaml").model_copy(update={"output_dir": str(tmp_path / "run")})
    assert cfg.eval.benchmarks == {}
    out = summarize_eval(cfg)
    committed = json.loads((src / "eval" / "summary.json").read_text())
    assert_same(committed, out)
    docs = json.loads((ROOT / "docs" / "results" / "pace-qwen0.5b" / "eval-summary.json").read_text())
    assert {n: m["pass@1"] for n, m in docs["models"].items()} == {n: out["models"][n]["pass@1"] for n in docs["models"]}
    assert out["models"]["heal"]["pass@1"] == pytest.approx(15 / 79)  # the README's 0.190


@pytest.mark.slow
def test_gpqa_answers_carry_no_step_verdict(tmp_path, smollm2):
    """A real teacher (SmolLM2 on llama.cpp) answers the GPQA preset's problems: the records say the
    step checker does not apply (derivation_ok None), and the summary's verified share is None."""
    atomic_write_jsonl(tmp_path / "run" / "problems.jsonl", [{"id": "x1", "question": TRAIN_Q, "answer": "4"}])
    cfg = load_config(None, {
        "output_dir": str(tmp_path / "run"), "teacher.model": "smollm2-135m", "teacher.n_ctx": 1024,
        "sampling.max_new_tokens": 24, "eval.n_samples": 1, "eval.greedy": False,
        "eval.data": {"source": f"gpqa:{write_gpqa(tmp_path / 'gpqa.csv')}"}})
    summary = run_eval(cfg, models={}, progress=False, log=lambda *a: None)
    recs = list(read_jsonl(tmp_path / "run" / "eval" / "evals.jsonl"))
    assert len(recs) == 2 and all(r["derivation_ok"] is None for r in recs)
    assert all(r["step_check"] == "not applicable (multiple choice)" for r in recs)
    assert summary["models"]["teacher"]["verified_share_of_correct"] is None
