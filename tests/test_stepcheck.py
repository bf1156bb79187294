"""The step checker's operand rule (issue 16): a valid rewrite may introduce numbers, a fabrication
may not. Every case below is a step of a committed gear-probe record (experiments/runs/gear-probe,
key given) unless marked synthetic."""

import pytest

from heal.stepcheck import check_steps, equations

# (record key, question, answer, steps): the old checker called each "operand from nowhere".
REWRITES = [
    ("basic_arithmetic-s2026-45/3/gear/0", "Calculate 1872 * 15.", "28080",
     ["1872 * 15 = 1872 * (10 + 5) = 1872 * 10 + 1872 * 5\n\n", "1872 * 10 = 18720\n\n", "1872 * 5 = 9360\n\n",
      "18720 + 9360 = 28080, so \\boxed{28080}"]),
    ("basic_arithmetic-s2026-8/1/gear/0", "Calculate -( 825 - -605 ) * 555.", "-793650",
     ["825 + 605 = 1430\n\n",
      "\\[ -1430 × 555 = -1430 × (500 + 50 + 5) = -1430 × 500 - 1430 × 50 - 1430 × 5 \\]\n\n",
      "\\[ -715000 - 71500 - 7150 = -793650 \\]\n\n", "\\boxed{-793650}"]),
    ("basic_arithmetic-s2026-10/guided/1", "Calculate 724 * 191.", "138284",
     ["\\[ 724 \\times 191 = 724 \\times (200 - 9) = 724 \\times 200 - 724 \\times 9 \\]\n\n",
      "\\[ 144800 - 6516 = 138284 \\]\n\n", "\\boxed{138284}"]),
    ("basic_arithmetic-s2026-37/3/gear/0", "Calculate -( -41 + 25 - -36 ).", "-20",
     ["The expression becomes \\(-41 + 25 + 36\\).\n\n",
      "Now we add: \\(-41 + 25 + 36 = -41 + 61 = 20\\).\n\n",
      "Finally, the negative: \\(-(20) = -20\\).\n\n", "So the final answer is \\(\\boxed{-20}\\)."]),
]


@pytest.mark.parametrize("key,question,answer,steps", REWRITES, ids=[r[0] for r in REWRITES])
def test_valid_rewrites_introduce_numbers(key, question, answer, steps):
    check = check_steps(steps, answer, question)
    assert check.unsupported is None, check.unsupported
    assert check.ok and check.reason == "ok"


def test_rewritten_numbers_are_those_after_the_first_part():
    [e] = equations("724 * 191 = 724 * (200 - 9)")
    assert e.ok and sorted(e.rewritten, key=int) == ["9", "200", "724"]
    [e] = equations("724 * 191 = 724 * (200 - 8)")  # not a rewrite: the link is false
    assert not e.ok and e.rewritten == []


def test_fabrication_from_nowhere_still_caught():
    # Synthetic, the issue's own example: a true equation whose operands come from nowhere.
    steps = ["361 - 220 = 141\n\n", "141 - 607 = -466\n\n", "Let me recompute. 1000 + 345 = 1345\n\n",
             "\\boxed{1345}"]
    check = check_steps(steps, "1345", "Calculate 361 - 220 - 607.")
    assert not check.ok and check.reason.startswith("operand from nowhere")
    assert check.unsupported == "step 2: 1000 in '1000 + 345 = 1345'"
    assert check_steps(steps[:2] + ["\\boxed{-466}"], "-466", "Calculate 361 - 220 - 607.").ok
    # The same numbers first and the decomposition after: the unknown number still starts the chain.
    check = check_steps(["1345 = 1000 + 345\n\n", "\\boxed{1345}"], "1345", "Calculate 361 - 220.")
    assert not check.ok and "1345" in check.unsupported


def test_real_fabrication_invented_addends():
    # chain_sum-s2026-12/0/gear/1: "add 1000 to each number" -- the 1000 is never taken back.
    question = "State the final answer to the following arithmetic problem: 2178 + 2788 + 9729 - 1226 ="
    steps = ["First, let's add the first two numbers:\n\\[2178 + 2788\\]\nTo make addition easier, we can add 1000 "
             "to each number:\n\\[2178 + 1000 = 3178\\]\n\\[2788 + 1000 = 3788\\]\nNow, add these two results together:\n"
             "\\[3178 + 3788 = 6966\\]\n\n", "So, the final answer is:\n\\[\\boxed{6966}\\]"]
    check = check_steps(steps, "6966", question)
    assert not check.ok and check.unsupported == "step 0: 1000 in '2178 + 1000 = 3178'"


def test_identities_zero_and_one_are_never_from_nowhere():
    # basic_arithmetic-s2026-41/7 (Stage 0, correct): "-68 can be written as -68 + 0".
    steps = ["\\[ (19 + 76) + (-68 + 0) = 95 + (-68) = 27 \\]\n\n", "\\[ -(27) = -27 \\]\n\n", "\\boxed{-27}"]
    check = check_steps(steps, "-27", "Calculate -( 19 + 76 + -68 ).")
    assert check.ok and check.unsupported is None


def test_bracketed_negative_operands_and_negation_are_checked():
    # basic_arithmetic-s2026-16/3: "(-98) × (-36) = 3528" used to be skipped (no digit before the operator).
    [e] = equations("\\[\n(-98) \\times (-36) = 3528\n\\]")
    assert e.ok and e.values == ["3528", "3528"]
    [e] = equations("(-98) * (-36) = 3628")
    assert not e.ok
    [e] = equations("Finally, the negative: \\(-(20) = -20\\).")
    assert e.ok and e.values == ["-20", "-20"]
    assert equations("so x = -20") == []  # still nothing to check without an operation
