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
