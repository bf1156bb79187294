import time

import pytest

from heal.verify import Verifier, extract_answer, last_boxed


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
