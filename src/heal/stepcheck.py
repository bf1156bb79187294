"""The arithmetic step checker: the oracle that keeps PURE honest.

Every `a op b = c` chain in a step is re-evaluated exactly (fractions, no floats), after stripping
LaTeX, `\\times`/`\\cdot`, unit words and thousands separators. A derivation is `ok` when at least
one equation was checked, none is false, the final answer is the result of a true equation (the
derivation reaches it), and the text shows no program output it could not have run.
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Sequence

_LATEX_SUBS = [
    (r"\\left|\\right|\\,|\\;|\\!|\\quad|\\qquad", " "),
    (r"\\(?:times|cdot)", "*"),
    (r"×|·|∗", "*"),
    (r"\\div|÷", "/"),
    (r"−|–", "-"),
    (r"\\(?:text|mathrm|textbf|mathbf)\{([^{}]*)\}", r" \1 "),
    (r"\\d?frac\{([^{}]+)\}\{([^{}]+)\}", r"((\1)/(\2))"),
    (r"\\\(|\\\)|\\\[|\\\]|\$", " "),
    (r"\\boxed\{([^{}]*)\}", r" \1 "),
    (r"[{}]", " "),
    (r"\*\*", " "),  # markdown bold, not a power (powers are out of scope)
]
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_CHAIN = re.compile(r"[-+*/().\d\s]*\d[-+*/().\d\s]*(?:=[-+*/().\d\s]*\d[-+*/().\d\s]*)+")
_LIST_MARKER = re.compile(r"^\s*(?:[-*]\s+|\(?\d+[.)]\s+|step\s+\d+\s*[:.]\s*)", re.IGNORECASE)
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def normalize(text: str) -> str:
    for pat, rep in _LATEX_SUBS:
        text = re.sub(pat, rep, text)
    # Thousands separators (1,234,567), repeated until stable.
    prev = None
    while prev != text:
        prev, text = text, _THOUSANDS.sub("", text)
    return text


def evaluate(expr: str) -> Fraction | None:
    """Exact value of + - * / arithmetic on numbers, or None if `expr` is not such an expression."""
    expr = expr.strip()
    if not expr:
        return None
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return None

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Div) and b == 0:
                raise ZeroDivisionError
            return _OPS[type(node.op)](a, b)
        raise ValueError("not arithmetic")

    try:
        return ev(tree)
    except (ValueError, ZeroDivisionError, RecursionError):
        return None


@dataclass
class Equation:
    step: int
    text: str
    values: list[str]
    ok: bool


def equations(step_text: str, step: int = 0) -> list[Equation]:
    """Every arithmetic chain `e1 = e2 = ...` in a step, each link checked."""
    out = []
    for line in normalize(step_text).splitlines():
        line = _LIST_MARKER.sub(" ", line)
        for m in _CHAIN.finditer(line):
            parts = [p.strip() for p in m.group(0).split("=")]
            vals = [evaluate(p) for p in parts]
            # Keep the longest run of evaluable parts; drop dangling pieces like "2." at the ends.
            pairs = [(p, v) for p, v in zip(parts, vals) if v is not None]
            if len(pairs) < 2 or not any(re.search(r"\d\s*[-+*/]\s*[-(\d]", p) for p, _ in pairs):
                continue  # "x = 5" or "= 3" alone: nothing to check
            ok = all(pairs[i][1] == pairs[i + 1][1] for i in range(len(pairs) - 1))
            out.append(Equation(step, m.group(0).strip(), [str(v) for _, v in pairs], ok))
    return out


_CODE_THEN_OUTPUT = re.compile(r"```[a-zA-Z]*\n.*?```\s*(?:\n\s*)*(?:```|output\s*:|result\s*:|\*\*output)",
                               re.IGNORECASE | re.DOTALL)


@dataclass
class StepCheck:
    ok: bool  # derivation verified
    n_equations: int
    first_false_step: int | None
    first_false: str | None
    reaches_answer: bool
    invented_output: bool
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def check_steps(steps: Sequence[str], answer: str | None = None) -> StepCheck:
    """Check a derivation given as its steps (texts). `answer`: the final answer it must reach."""
    eqs = [e for i, s in enumerate(steps) for e in equations(s, i)]
    false = next((e for e in eqs if not e.ok), None)
    invented = bool(_CODE_THEN_OUTPUT.search("".join(steps)))
    target = evaluate(normalize(answer).strip()) if answer else None
    reaches = target is not None and any(e.ok and Fraction(e.values[-1]) == target for e in eqs)
    if answer is None:
        reaches = True
    if false is not None:
        reason = f"false equation in step {false.step}: {false.text}"
    elif invented:
        reason = "program output it could not have run"
    elif not eqs:
        reason = "no checkable equation"
    elif not reaches:
        reason = "no true equation reaches the final answer"
    else:
        reason = "ok"
    return StepCheck(ok=reason == "ok", n_equations=len(eqs), first_false_step=None if false is None else false.step,
                     first_false=None if false is None else false.text, reaches_answer=reaches,
                     invented_output=invented, reason=reason)
