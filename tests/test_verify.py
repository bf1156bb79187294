import random
import time

import pytest
from helpers import load_script

from heal.problems import Problem, ProblemError
from heal.verify import Verifier, boxed_span, check_gold, extract_answer, last_boxed


@pytest.fixture(scope="module")
def verifier():
    with Verifier(timeout_s=2.0) as v:
        yield v


def test_boxed_extraction():
    assert last_boxed(r"first \boxed{1} then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{\sqrt{\frac{a}{b}}} and \boxed{") == r"\sqrt{\frac{a}{b}}"  # unclosed last box skipped
    assert extract_answer(r"so \fbox{42}") == ("42", "boxed")
    assert extract_answer("The final answer is $-14,282$.") == ("-14,282", "phrase")
    assert extract_answer("Answer: 17") == ("17", "phrase")
    assert extract_answer("I am not sure.") == (None, "none")


@pytest.mark.parametrize("gold,pred", [("1/2", "0.5"), (r"3\sqrt{2}", r"\sqrt{18}"), ("-14282", "-14,282"),
                                       (r"\frac{3}{4}", "0.75"), ("12", "12.0")])
def test_equivalent(verifier, gold, pred):
    assert verifier.compare(gold, pred) == (True, None)


@pytest.mark.parametrize("gold,pred", [("1/2", "0.6"), ("-14282", "14282"), (r"3\sqrt{2}", r"\sqrt{19}")])
def test_not_equivalent(verifier, gold, pred):
    assert verifier.compare(gold, pred) == (False, None)


def test_check_uses_last_box(verifier):
    v = verifier.check(r"We get \boxed{3} ... no wait, \boxed{\frac{1}{2}}", "0.5")
    assert (v.pred, v.extraction, v.correct, v.error) == (r"\frac{1}{2}", "boxed", True, None)
    v = verifier.check("no answer here", "0.5")
    assert (v.pred, v.correct, v.error) == (None, False, None)


def test_pathological_input_times_out_without_hanging():
    with Verifier(timeout_s=1.0) as v:
        assert v.compare("2", "2") == (True, None)  # warm the worker
        t = time.time()
        correct, error = v.compare("7", "9^{9^{9^{9^{9}}}}")
        assert time.time() - t < 5
        assert correct is None and error  # an error, never a silent "wrong"
        # The worker is replaced and keeps working.
        assert v.compare("1/2", "0.5") == (True, None)


def test_verifier_error_is_recorded_not_wrong(verifier):
    correct, error = verifier.compare("", "5")
    assert correct is None and "ground truth" in error


def test_reasoning_gym_scorer():
    with Verifier(method="reasoning_gym") as v:
        assert v.compare("-965", "-965", {"task": "chain_sum"}) == (True, None)
        assert v.compare("-965", "965", {"task": "chain_sum"}) == (False, None)


# The extraction as it was before it was made linear (quadratic on the inputs below): the reference
# that the linear one must agree with on every input, kept in the benchmark that times the two.
_OLD = load_script("benchmarks/extract_answer.py")


_PIECES = ["\\boxed{", "\\fbox {", "{", "}", "}", "The answer is", "final answer", "Answer", "**answer**", ":", "=",
           " ", " ", "\n", "\n", "\t", "*", "$", "\\(", "\\)", "\\[", "\\]", ".", "42", "x", "is"]


def test_linear_extraction_agrees_with_the_old_one():
    rng = random.Random(13)
    texts = ["".join(rng.choices(_PIECES, k=rng.randint(1, 14))) for _ in range(20_000)]
    for text in texts:
        assert (extract_answer(text), boxed_span(text)) == (_OLD.old_extract(text), _OLD.old_boxed(text)), text


def test_pathological_extraction_inputs_give_the_right_answer():
    # Inputs that made the old extraction quadratic (8,000 unclosed boxes: 11.8 s; 20,000 " \n": 8.1 s);
    # their speed is measured in benchmarks/extract_answer.py.
    assert extract_answer("\\boxed{7} " + "\\boxed{" * 8000) == ("7", "boxed")
    unclosed = "\\boxed{" * 8000
    assert extract_answer(unclosed) == (None, "none") and boxed_span(unclosed) is None
    assert extract_answer(" \n" * 20000) == (None, "none")
    assert extract_answer(" \n" * 20000 + "Answer: 5") == ("5", "phrase")
    assert extract_answer("The answer is" + "\n" * 20000) == (None, "none")
    assert extract_answer("The final answer is" + " :\n" * 20000 + "$12$.") == ("12", "phrase")
    assert extract_answer("Answer: " + "$" * 20000 + "3") == ("3", "phrase")
    nested = "\\boxed{" + "{" * 20000 + "1" + "}" * 20000 + "}"
    assert last_boxed(nested) == "{" * 20000 + "1" + "}" * 20000


def test_clean_phrase_strips_one_math_delimiter_pair():
    assert extract_answer("The answer is $\\frac{1}{2}$.") == ("\\frac{1}{2}", "phrase")
    assert extract_answer("Final answer: \\(x+1\\)") == ("x+1", "phrase")
    assert extract_answer("Answer: \\[ 7 \\].") == ("7", "phrase")
    assert extract_answer("**Answer:** $$") == (None, "none")


@pytest.mark.parametrize("gold", ["\\frac{", "???", "", "(1,", "\\le"])
def test_unparsable_gold_is_an_error_not_wrong(verifier, gold):
    # math-verify falls back to the bare string for these, which only the identical string matches.
    correct, error = verifier.compare(gold, "5")
    assert correct is None and "could not parse the ground truth" in error


def test_check_gold_names_the_problem(verifier):
    good, bad = Problem("p1", "q", "1/2", "f"), Problem("p2", "q", "\\frac{", "f")
    with pytest.raises(ProblemError, match=r"^problem 'p2' \(f\): math-verify could not parse the ground truth '\\\\frac\{' .*data\.on_error: skip"):
        check_gold([good, bad], verifier=verifier)
    skipped = []
    assert check_gold([good, bad, good.to_dict()], on_error="skip", skipped=skipped, verifier=verifier) == [good, good.to_dict()]
    assert len(skipped) == 1 and skipped[0].startswith("problem 'p2'")


def test_check_gold_with_the_task_scorer():
    ok = Problem("c0", "q", "-965", "reasoning_gym:chain_sum", {"task": "chain_sum"})
    no_task = Problem("c1", "q", "5", "x")
    skipped = []
    assert check_gold([ok, no_task], method="reasoning_gym", on_error="skip", skipped=skipped) == [ok]
    assert "needs meta.task" in skipped[0]
