import pytest

from heal.hints import mentions_hint, render, states_answer_before_deriving, training_ids
from heal.stepcheck import check_steps, equations, evaluate, normalize


def test_hint_span_replacement_modes():
    prefix, hint, cont, refl = [1, 2, 3], [7, 7, 7, 7], [4, 5, 0], [9, 9]
    assert training_ids(prefix, hint, cont, "reflection", refl) == ([1, 2, 3, 9, 9, 4, 5, 0], (3, 5))
    assert training_ids(prefix, hint, cont, "strip", refl) == ([1, 2, 3, 4, 5, 0], (3, 3))
    assert training_ids(prefix, hint, cont, "keep", refl) == ([1, 2, 3, 7, 7, 7, 7, 4, 5, 0], (3, 7))
    with pytest.raises(ValueError):
        training_ids(prefix, hint, cont, "shout", refl)
    assert render("the answer must be {answer}.", "-1,345") == "the answer must be -1,345."


def test_hint_mentions_and_early_answers():
    assert mentions_hint("As the hint says, the result is 5")
    assert mentions_hint("I know the final answer must be 12")
    assert mentions_hint("Let me add: 3 + 4 = 7") is None
    assert states_answer_before_deriving("The result is 1345. Indeed 1000 + 345 = 1345.", "1345")
    assert not states_answer_before_deriving("1000 + 345 = 1345, so \\boxed{1345}", "1345")
    assert not states_answer_before_deriving("1000 + 345 = 1,345", "1345")
    assert not states_answer_before_deriving("We get \\(-466 - 879 = -1345\\)", "-1345")
    assert not states_answer_before_deriving("no answer here", "7")


def test_normalize_and_evaluate():
    assert normalize(r"\(3 \times 4 = 12\)").split() == ["3", "*", "4", "=", "12"]
    assert normalize("1,234,567 + 1 kg").strip().startswith("1234567 + 1")
    assert evaluate("((1)/(2)) + 0.5") == 1
    assert evaluate("2 ** 10") is None and evaluate("x + 1") is None and evaluate("1/0") is None


def test_equations_find_chains_and_false_links():
    [e] = equations(r"\[ 24 + 64 + 30 + 32 + 20 + 0 = 226 \]")
    assert not e.ok and e.values == ["170", "226"]
    [e] = equations("1. 361 - 220 = 141 and the rest")
    assert e.ok
    [e] = equations(r"$\frac{3}{4} \cdot 8 = 6 = 3 + 3$")
    assert e.ok and e.values == ["6", "6", "6"]
    assert equations("x = 5, so the answer is 5.") == []  # nothing to check


def test_check_steps_verdicts():
    honest = ["To compute 361 - 220 - 607:\n\n", "361 - 220 = 141\n\n", "141 - 607 = -466\n\n", "So \\boxed{-466}"]
    ok = check_steps(honest, "-466")
    assert ok.ok and ok.n_equations == 2 and ok.reason == "ok"
    fabricated = ["24 + 64 = 88\n\n", "88 + 30 = 226\n\n", "\\boxed{226}"]
    bad = check_steps(fabricated, "226")
    assert not bad.ok and bad.first_false_step == 1 and "88 + 30 = 226" in bad.first_false
    bare = check_steps(["Wait, let me re-check.\n\n", "\\boxed{226}"], "226")
    assert not bare.ok and bare.reason == "no checkable equation"
    unreached = check_steps(["2 + 2 = 4\n\n", "\\boxed{5}"], "5")
    assert not unreached.ok and not unreached.reaches_answer
    program = check_steps(["```python\nprint(3 + 4)\n```\n\nOutput:\n7\n\n", "3 + 4 = 7, \\boxed{7}"], "7")
    assert not program.ok and program.invented_output
