import json
import math

import pytest

from heal.evaluate import contamination, paired_difference, pass_at_1


def test_pass_at_1_and_standard_error_on_known_inputs():
    r = pass_at_1({"a": [True, True, False, False], "b": [True, True, True, True], "c": [False] * 4})
    assert r["pass@1"] == pytest.approx(0.5)  # mean of 0.5, 1.0, 0.0
    assert r["se"] == pytest.approx(0.5 / math.sqrt(3))  # std(ddof=1) of the per-problem means = 0.5
    assert (r["problems"], r["n"]) == (3, 4)
    assert pass_at_1({"a": [None, True]})["pass@1"] == 0.5  # a verifier error counts as wrong
    assert pass_at_1({"a": [True]})["se"] is None and pass_at_1({})["pass@1"] is None


def test_paired_difference_on_known_inputs():
    a = {"p": [True, True], "q": [True, False], "r": [False, False], "only_a": [True, True]}
    b = {"p": [True, False], "q": [False, False], "r": [False, False]}
    d = paired_difference(a, b)  # per-problem differences 0.5, 0.5, 0.0 over the 3 shared problems
    assert d["problems"] == 3 and d["diff"] == pytest.approx(1 / 3)
    assert d["se"] == pytest.approx(math.sqrt(1 / 12) / math.sqrt(3))  # std(ddof=1) of [.5, .5, 0] = sqrt(1/12)
    assert paired_difference(a, {})["diff"] is None


def test_decontamination_ignores_template_but_catches_overlap():
    template = "State the final answer to the following arithmetic problem: {} ="
    train = [{"id": f"t{i}", "question": template.format(f"{100 + i} + {200 + 3 * i} - {300 + 7 * i} + {400 + i}")}
             for i in range(40)]
    test = [{"id": "fresh", "question": template.format("911 + 822 - 733 + 644")},
            {"id": "copy", "question": train[5]["question"]},
            {"id": "overlap", "question": "Calculate 105 + 215 - 335 + 405 + 1 + 2 + 3 + 4, carefully."}]
    hits = {h["test_id"]: h for h in contamination(test, train, n=4, df_max=0.05)}
    assert "fresh" not in hits  # shares only the task's boilerplate
    assert hits["copy"]["ngram"] == "exact match"
    assert hits["overlap"]["train_id"] == "t5" and "105 215 335 405" == hits["overlap"]["ngram"]


def test_decontamination_template_plus_one_shared_number_is_not_overlap():
    """The PACE runs' one false positive: 7 template words + one number that a training question
    also has formed a shared 8-gram. Template words are removed before n-grams are formed."""
    template = "State the final answer to the following arithmetic problem: {} ="
    train = [{"id": f"t{i}", "question": template.format(f"{682 if i == 3 else 100 + i} + {200 + 3 * i} - {300 + i}")}
             for i in range(40)]
    test = [{"id": "shares_682", "question": template.format("682 + 17 - 905")},
            {"id": "same_numbers", "question": "State the answer to the following problem: 682 + 209 - 303"},
            {"id": "all_template", "question": "State the final answer to the following arithmetic problem"}]
    hits = {h["test_id"]: h for h in contamination(test, train, n=8, df_max=0.05)}
    assert "shares_682" not in hits and "all_template" not in hits
    # A reworded copy: its content (3 numbers, fewer than n, so compared whole) is t3's.
    assert hits["same_numbers"]["train_id"] == "t3"


def test_run_eval_loads_no_model_with_nothing_left_and_pairs_with_sft_rs(tmp_path):
    """Finished models are not loaded (here neither engine could be: the teacher's server has no
    address, the students' vllm engine may not be installed); the summary pairs methods with sft_rs."""
    from heal.config import load_config
    from heal.evaluate import run_eval
    from heal.store import atomic_write_jsonl

    problems = [{"id": f"t{i}", "question": f"{i} + {i}", "answer": str(2 * i)} for i in range(3)]
    atomic_write_jsonl(tmp_path / "test.jsonl", problems)  # eval.data: the held-out set is built from it
    atomic_write_jsonl(tmp_path / "run" / "problems.jsonl", [{"id": "x", "question": "What is 7 * 9?", "answer": "63"}])
    cfg = load_config(None, {"output_dir": str(tmp_path / "run"), "teacher.engine": "openai",
                             "eval.engine": "vllm", "eval.n_samples": 2, "eval.greedy": False,
                             "eval.data": {"source": str(tmp_path / "test.jsonl")}})
    atomic_write_jsonl(tmp_path / "run" / "eval" / "problems.jsonl", [{**p, "source": "test", "meta": {}} for p in problems])
    right = {"teacher": [[1, 1], [1, 0], [0, 0]], "sft_rs": [[1, 0], [0, 0], [0, 0]], "heal": [[1, 1], [1, 0], [0, 0]]}
    recs = [{"key": f"{m}@{'teacher' if m == 'teacher' else 'base'}/t{i}/{j}", "model": m,
             "tag": "teacher" if m == "teacher" else "base", "problem_id": f"t{i}", "sample": j, "correct": bool(c),
             "truncated": False, "derivation_ok": bool(c), "pred": str(2 * i) if c else None,
             "text": ("0 + 0 = 0." if j == 0 else "0 + 1 = 2.") if (m, i) == ("heal", 0) else "no working"}
            for m, rows in right.items() for i, row in enumerate(rows) for j, c in enumerate(row)]
    atomic_write_jsonl(tmp_path / "run" / "eval" / "evals.jsonl", recs)
    logs = []
    out = run_eval(cfg, models={"sft_rs": str(tmp_path / "none"), "heal": str(tmp_path / "none")}, progress=False,
                   log=logs.append)
    assert logs.count("eval sft_rs: done, skipping") == 1 and "eval teacher: done, skipping" in logs
    assert out["models"]["heal"]["pass@1"] == pytest.approx(0.5)
    d = out["models"]["heal"]["vs_sft_rs"]  # per-problem differences 0.5, 0.5, 0
    assert d["diff"] == pytest.approx(1 / 3) and d["problems"] == 3
    assert out["tiers"] == {"solved": 2, "corner": 1}  # the teacher: 2/2, 1/2, 0/2
    assert d["per_tier"]["solved"] == {"diff": pytest.approx(0.5), "se": pytest.approx(0.0), "problems": 2}
    assert d["per_tier"]["corner"] == {"diff": 0.0, "se": None, "problems": 1}
    assert "vs_sft_rs" not in out["models"]["sft_rs"] and "vs_heal" not in out["models"]["heal"]
    assert out["models"]["sft_rs"]["vs_heal"]["diff"] == pytest.approx(-1 / 3)  # ablations are paired with heal too
    # Graded signals: heal's t0 outputs hold one true and one false equation, none of the others any.
    assert out["models"]["heal"]["equations"] == 2 and out["models"]["heal"]["equation_accuracy"] == 0.5
    assert out["models"]["heal"]["answer_rate"] == 0.5  # a prediction on its 3 correct samples of 6

    # The first evaluation pinned the settings its records were made with: other sampling settings
    # are refused (the records would silently mix), a verifier timeout is not a setting of the answers.
    from heal.sample import RunMismatch

    assert json.loads((tmp_path / "run" / "eval" / "settings.json").read_text())["sampling"]["temperature"] == 0.6
    hot = cfg.model_copy(deep=True)
    hot.sampling.temperature, hot.sampling.max_new_tokens = 1.0, 99
    with pytest.raises(RunMismatch, match=r"sampling.max_new_tokens, sampling.temperature.*settings.json"):
        run_eval(hot, models={}, progress=False, log=logs.append)
    slow = cfg.model_copy(deep=True)
    slow.verify.timeout_s = 30.0
    assert run_eval(slow, models={}, progress=False, log=logs.append)["models"]["teacher"]["pass@1"] == 0.5


def test_eval_settings_pin_binds_only_once_records_exist(tmp_path):
    from heal.config import load_config
    from heal.evaluate import pin_eval_settings
    from heal.sample import RunMismatch
    from heal.store import atomic_write_jsonl

    cfg = load_config(None, {"output_dir": str(tmp_path / "run")})
    pin_eval_settings(cfg)
    settings = tmp_path / "run" / "eval" / "settings.json"
    cfg.sampling.top_p = 0.5  # no record yet: the new settings are pinned instead
    pin_eval_settings(cfg)
    assert json.loads(settings.read_text())["sampling"]["top_p"] == 0.5
    atomic_write_jsonl(tmp_path / "run" / "eval" / "evals.jsonl", [{"key": "m@base/p/0"}])
    cfg.prompt.system = "Be brief."
    with pytest.raises(RunMismatch, match="prompt.system"):
        pin_eval_settings(cfg)
