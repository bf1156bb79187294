import json
import math

import pytest

from heal.evaluation import (avg_at_n, contamination, contamination_report, maj_at_k, majority_correct, normalize_answer,
                           paired_difference, pass_at_1, pass_at_k, pass_at_k_estimate, pass_at_k_ks)


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
    from heal.evaluation import run_eval
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
             "truncated": False, "derivation_ok": bool(c), "pred": str(2 * i) if c else None, "n_tokens": 4,
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
    from heal.rundir import RunMismatch

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
    from heal.evaluation import pin_eval_settings
    from heal.rundir import RunMismatch
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


def test_unbiased_pass_at_k_estimator_on_hand_computed_cases():
    assert pass_at_k_estimate(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k_estimate(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k_estimate(10, 3, 1) == pytest.approx(0.3)  # k = 1: c / n
    assert pass_at_k_estimate(4, 3, 2) == 1.0 and pass_at_k_estimate(4, 0, 3) == 0.0  # n - c < k; no correct sample
    # Where the binomials do not fit a float (C(2000, 1000) ~ 2e600), the product form still holds:
    # C(1997, 1000) / C(2000, 1000) = (1000 * 999 * 998) / (2000 * 1999 * 1998).
    with pytest.raises(OverflowError):
        float(math.comb(2000, 1000))
    assert pass_at_k_estimate(2000, 3, 1000) == pytest.approx(1 - (1000 * 999 * 998) / (2000 * 1999 * 1998), rel=1e-12)
    assert pass_at_k_estimate(1000, 1, 500) == pytest.approx(0.5, rel=1e-12)  # C(999,500)/C(1000,500) = 500/1000
    with pytest.raises(ValueError, match="0 < k <= n"):
        pass_at_k_estimate(4, 1, 5)


def test_pass_at_k_over_problems_and_its_standard_error():
    cs = {"a": [True, False, False, False], "b": [True, None, True, False], "c": [False] * 4, "short": [True]}
    r = pass_at_k(cs, 2)  # a: 1 - 3/6 = 1/2; b (None is wrong, c = 2): 1 - 1/6 = 5/6; c: 0; `short` has n < k
    assert r["problems"] == 3 and r["mean"] == pytest.approx(4 / 9)
    # deviations from 4/9: 1/18, 7/18, -8/18 -> variance (1 + 49 + 64) / 324 / 2 = 57/324; se = sqrt(57)/18/sqrt(3)
    assert r["se"] == pytest.approx(math.sqrt(19) / 18)
    assert pass_at_k(cs, 4)["mean"] == pytest.approx(2 / 3)  # a and b: n - c < 4 -> 1; c: 0
    assert pass_at_k(cs, 1)["mean"] == pytest.approx((0.25 + 0.5 + 0 + 1) / 4)  # k = 1 is pass@1, `short` included
    assert pass_at_k({}, 1) == {"mean": None, "se": None, "problems": 0}
    assert (pass_at_k_ks(4), pass_at_k_ks(6), pass_at_k_ks(1)) == ([1, 2, 4], [1, 2, 4, 6], [1])
    assert pass_at_k_ks(64) == [1, 2, 4, 8, 16, 32, 64]


def test_avg_at_n_is_pass_at_1_named_with_its_n():
    r = avg_at_n({"a": [True, True, False, False], "b": [True] * 4, "c": [False] * 4})
    assert r == {"n": 4, "mean": pytest.approx(0.5), "se": pytest.approx(0.5 / math.sqrt(3)), "problems": 3}


def test_normalised_answers_for_majority_voting():
    assert normalize_answer("2.0") == "2" and normalize_answer("2.50") == "2.5" and normalize_answer(" 1,000 ") == "1000"
    assert normalize_answer("\\dfrac{1}{2}") == "\\frac{1}{2}" and normalize_answer("$\\frac{1}{2}$.") == "\\frac{1}{2}"
    assert normalize_answer("\\left( 3, \\frac{\\pi}{2} \\right)") == "(3,\\frac{\\pi}{2})"
    assert normalize_answer("1,2") == "1,2"  # a pair, not a thousands separator
    assert normalize_answer("\\text{east}") == "east"


def test_majority_vote_counts_verified_answers_as_one():
    # "1/2" and "0.5" were each verified equal to the gold: one answer with 2 votes, against "3" with 1.
    # (Compared as strings the three would tie 1-1-1, and "3", given first, would win.)
    assert majority_correct([("3", False), ("1/2", True), ("0.5", True)]) is True
    # "3", "3.0" and "3" are one wrong answer (3 votes) against the gold's 2.
    assert majority_correct([("3", False), ("\\frac12", True), ("0.5", True), ("3", False), ("3.0", False)]) is False
    assert majority_correct([("7", False), ("5", True)]) is False  # a tie goes to the answer given first
    assert majority_correct([("5", True), ("7", False)]) is True
    assert majority_correct([(None, False), (None, False), ("5", True)]) is True  # no answer, no vote
    assert majority_correct([(None, False)]) is False and majority_correct([]) is False
    assert majority_correct([("5", None), ("5", None), ("4", True)]) is False  # a verifier error is not a verified answer


def test_maj_at_k_over_problems():
    answers = {"p": [("1", True), ("2", False), ("2", False)], "q": [("9", True), ("9", True), ("8", False)]}
    r = maj_at_k(answers)  # p: "2" wins 2-1 (wrong); q: right
    assert (r["k"], r["mean"], r["problems"]) == (3, 0.5, 2) and r["se"] == pytest.approx(0.5)  # std(1, 0) / sqrt 2
    assert maj_at_k(answers, k=1)["mean"] == 1.0  # the first sample alone: both right


def test_contamination_counted_at_8_and_32_grams():
    words = lambda start, n: " ".join(str(start + i) for i in range(n))  # noqa: E731  (numbers are words)
    train = [{"id": "t0", "question": words(1000, 40)}, {"id": "t1", "question": words(5000, 40)}]
    test = [{"id": "copy", "question": words(1000, 40)},
            {"id": "long_overlap", "question": words(5000, 35) + " " + words(9000, 10)},  # 35 shared words in a row
            {"id": "short_overlap", "question": words(1000, 10) + " " + words(7000, 30)},  # 10 in a row
            {"id": "fresh", "question": words(3000, 40)}]
    r = contamination_report(test, train, ngram=8, df_max=0.05, source="math500:/x/test.jsonl")
    assert r["benchmark"] == "math500" and (r["test"], r["train"], r["dropped"]) == (4, 2, 3)
    assert {h["test_id"] for h in r["hits"]} == {"copy", "long_overlap", "short_overlap"}
    assert r["by_ngram"]["8"]["contaminated"] == 3 and r["by_ngram"]["8"]["rate"] == 0.75
    assert {h["test_id"] for h in r["by_ngram"]["32"]["hits"]} == {"copy", "long_overlap"}
    assert list(r["by_ngram"]) == ["8", "32"]
    assert list(contamination_report(test, train, ngram=13, df_max=0.05, source="x.jsonl")["by_ngram"]) == ["8", "13", "32"]


def test_summary_has_the_reasoning_metrics(tmp_path):
    from heal.config import load_config
    from heal.evaluation import summarize_eval
    from heal.store import atomic_write_jsonl

    cfg = load_config(None, {"output_dir": str(tmp_path / "run"), "eval.n_samples": 4})
    atomic_write_jsonl(tmp_path / "run" / "eval" / "problems.jsonl", [{"id": p, "question": "q", "answer": "1"} for p in "ab"])
    # model m: a answers 1, 1, 2, none (c = 2); b answers 3, 3, 1, 3 (c = 1); greedy answers are left out.
    preds = {"a": [("1", True), ("1", True), ("2", False), (None, False)], "b": [("3", False), ("3", False), ("1", True), ("3", False)]}
    recs = [{"key": f"m@base/{p}/{j}", "model": "m", "tag": "base", "problem_id": p, "sample": j, "pred": pred,
             "correct": ok, "truncated": pred is None, "n_tokens": 10 * (j + 1), "derivation_ok": False, "text": ""}
            for p, rows in preds.items() for j, (pred, ok) in enumerate(rows)]
    recs.append({"key": "m@base/a/greedy", "model": "m", "tag": "base", "problem_id": "a", "sample": "greedy", "pred": None,
                 "correct": False, "truncated": True, "n_tokens": 1000, "derivation_ok": False, "text": ""})
    atomic_write_jsonl(tmp_path / "run" / "eval" / "evals.jsonl", recs)
    m = summarize_eval(cfg)["models"]["m"]
    assert m["avg@n"] == {"n": 4, "mean": pytest.approx(0.375), "se": pytest.approx(0.125), "problems": 2}  # 2/4, 1/4
    assert m["maj@k"]["k"] == 4 and m["maj@k"]["mean"] == 0.5  # a: "1" 2-1; b: "3" 3-1
    # pass@2: a 1 - C(2,2)/C(4,2) = 5/6, b 1 - C(3,2)/C(4,2) = 1/2; pass@4: both 1
    assert m["pass@k"]["2"]["mean"] == pytest.approx((5 / 6 + 1 / 2) / 2) and m["pass@k"]["4"]["mean"] == 1.0
    assert list(m["pass@k"]) == ["1", "2", "4"] and m["pass@k"]["1"]["mean"] == pytest.approx(m["pass@1"])
    assert m["mean_tokens"] == 25.0  # 10, 20, 30, 40 twice; the greedy answer's 1000 is not a sampled answer
    assert m["truncation_rate_sampled"] == 1 / 8 and m["truncation_rate"] == 2 / 9  # the older key counts greedy too


def test_held_out_benchmark_preset_is_decontaminated_and_reported(tmp_path):
    from heal.config import load_config
    from heal.evaluation import held_out_problems
    from heal.store import atomic_write_jsonl

    words = lambda start, n: " ".join(str(start + i) for i in range(n))  # noqa: E731
    atomic_write_jsonl(tmp_path / "run" / "problems.jsonl",
                       [{"id": f"t{i}", "question": words(1000 * (i + 1), 40), "answer": "1"} for i in range(3)])
    bench = tmp_path / "test.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in [
        {"problem": words(1000, 40), "answer": "2", "unique_id": "copy"},
        {"problem": words(2000, 12) + " " + words(50000, 30), "answer": "3", "unique_id": "part"},
        {"problem": words(90000, 40), "answer": "\\frac{1}{2}", "unique_id": "fresh"}]))
    cfg = load_config(None, {"output_dir": str(tmp_path / "run"), "eval.data": {"source": f"math500:{bench}"}})
    logs = []
    kept = held_out_problems(cfg, log=logs.append)
    assert [p["id"] for p in kept] == ["fresh"]
    c = json.loads((tmp_path / "run" / "eval" / "contamination.json").read_text())
    assert (c["benchmark"], c["dropped"], c["by_ngram"]["8"]["contaminated"], c["by_ngram"]["32"]["contaminated"]) == (
        "math500", 2, 2, 1)
    assert "math500: 3 held-out problems (8-gram overlap: 2, 32-gram overlap: 1), 2 dropped" in logs[-1]


def test_majority_vote_on_choice_problems_counts_letters(tmp_path):
    from heal.config import load_config
    from heal.evaluation import summarize_eval
    from heal.store import atomic_write_jsonl

    cfg = load_config(None, {"output_dir": str(tmp_path / "run"), "eval.n_samples": 3, "eval.greedy": False})
    meta = {"answer_kind": "choice", "choices": {"A": "41", "B": "42", "C": "43", "D": "67"}}
    atomic_write_jsonl(tmp_path / "run" / "eval" / "problems.jsonl", [{"id": "g", "question": "q", "answer": "B", "meta": meta}])
    # "(A)" and "A" name one option: A wins 2-1. As strings the three would tie and "B", given first, would win.
    recs = [{"key": f"m@base/g/{j}", "model": "m", "tag": "base", "problem_id": "g", "sample": j, "pred": pred,
             "correct": pred == "B", "truncated": False, "n_tokens": 5, "derivation_ok": False, "text": ""}
            for j, pred in enumerate(["B", "(A)", "A"])]
    atomic_write_jsonl(tmp_path / "run" / "eval" / "evals.jsonl", recs)
    assert summarize_eval(cfg)["models"]["m"]["maj@k"]["mean"] == 0.0


def test_multiple_choice_answers_are_neither_verified_nor_unverified():
    """On a GPQA-style problem the arithmetic step checker has nothing to check: an eval record's
    derivation_ok is None there, and the verified share counts only the answers it applies to."""
    from heal.evaluation import model_summary

    rec = lambda pid, j, correct, ok: {"key": f"m@base/{pid}/{j}", "model": "m", "problem_id": pid, "sample": j,  # noqa: E731
                                       "correct": correct, "pred": "A" if correct else "B", "truncated": False,
                                       "n_tokens": 10, "text": "", "derivation_ok": ok}
    rs = [rec("g1", 0, True, None), rec("g1", 1, False, None), rec("m1", 0, True, True), rec("m1", 1, True, False)]
    sampled = {"g1": [True, False], "m1": [True, True]}
    m = model_summary(rs, sampled, {}, frozenset({"g1"}))
    assert m["verified_share_of_correct"] == 0.5  # m1's two correct answers, one verified; g1's not counted
    greedy = rec("m1", "greedy", True, True)  # the greedy pass is not a sample: its answer counts for "greedy" only
    assert model_summary(rs + [greedy], sampled, {}, frozenset({"g1"}))["verified_share_of_correct"] == 0.5
    only_choice = model_summary(rs[:2], {"g1": [True, False]}, {}, frozenset({"g1"}))
    assert only_choice["verified_share_of_correct"] is None
    from heal.records import EVAL, check

    check(rs[0], EVAL)


def test_tier_samples_set_the_tiers_and_never_score_the_teacher(tmp_path):
    """eval.tier_samples: the teacher's extra samples (seeds of their own) decide each test problem's
    tier; its pass@1 and the students' per-tier numbers still come from the scored samples, so the
    teacher's corner accuracy is no longer 0 by construction."""
    from heal.config import load_config
    from heal.evaluation import eval_seed, pending_jobs, single_set, summarize_eval
    from heal.store import JsonlStore, atomic_write_jsonl

    cfg = load_config(None, {"output_dir": str(tmp_path / "run"), "eval.n_samples": 2, "eval.greedy": False,
                             "eval.tier_samples": 4, "sample.k": 4})
    atomic_write_jsonl(tmp_path / "run" / "eval" / "problems.jsonl", [{"id": p, "question": "q", "answer": "1"} for p in "ab"])
    scored = {"teacher": {"a": [1, 1], "b": [1, 0]}, "m": {"a": [0, 0], "b": [1, 1]}}
    tiers = {"a": [1, 1, 1, 1], "b": [0, 0, 0, 0]}  # a: solved, b: corner (the scored samples say 2/2 and 1/2)

    def rec(model, p, j, c):
        return {"key": f"{model}@x/{p}/{j}", "model": model, "tag": "x", "problem_id": p, "sample": j, "pred": "1",
                "correct": bool(c), "truncated": False, "n_tokens": 5, "derivation_ok": bool(c), "text": ""}

    recs = [rec(m, p, j, c) for m, rows in scored.items() for p, cs in rows.items() for j, c in enumerate(cs)]
    recs += [rec("teacher", p, f"tier{j}", c) for p, cs in tiers.items() for j, c in enumerate(cs)]
    atomic_write_jsonl(tmp_path / "run" / "eval" / "evals.jsonl", recs)
    out = summarize_eval(cfg, baselines=("teacher",))
    assert out["tiers"] == {"solved": 1, "corner": 1} and out["tiers_from"].startswith("4 teacher samples")
    t = out["models"]["teacher"]
    assert t["pass@1"] == 0.75 and t["n"] == 2 and t["mean_tokens"] == 5.0  # 2 scored samples a problem; tier ones left out
    assert t["per_tier"]["corner"]["pass@1"] == 0.5  # b: 1 of its 2 scored samples, though its tier samples all fail
    assert out["models"]["m"]["per_tier"]["corner"]["pass@1"] == 1.0
    assert out["models"]["m"]["vs_teacher"]["per_tier"]["solved"]["diff"] == -1.0

    # without tier samples the tiers fall back to the scored ones (a 2/2, b 1/2: both reach solved_min_pass 0.5)
    plain = load_config(None, {"output_dir": str(tmp_path / "run"), "eval.n_samples": 2, "eval.greedy": False, "sample.k": 4})
    assert summarize_eval(plain)["tiers"] == {"solved": 2}

    # only the teacher draws tier samples, each on its own seed
    store = JsonlStore(tmp_path / "empty.jsonl")
    problems = [{"id": "a"}]
    assert [j for _, j in pending_jobs(cfg, "teacher", "x", problems, store)] == [0, 1, "tier0", "tier1", "tier2", "tier3"]
    assert [j for _, j in pending_jobs(cfg, "m", "x", problems, store)] == [0, 1]
    seeds = [eval_seed(0, "a", j) for j in (0, 1, "greedy", "tier0", "tier1")]
    assert len(set(seeds)) == 4 and seeds[3] == seeds[0] + 1000 and single_set(cfg).tier_samples == 4


def test_holm_on_a_hand_computed_case():
    from heal.evaluation import holm

    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, 2 * 0.03, max(0.06, 1 * 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
