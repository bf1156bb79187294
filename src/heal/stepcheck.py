"""The arithmetic step checker: the oracle that keeps PURE honest.

Every `a op b = c` chain in a step is re-evaluated exactly (fractions, no floats), after stripping
LaTeX, `\\times`/`\\cdot`/`x`, unit words and thousands separators. A derivation is `ok` when at
least one equation was checked, none is false, every operand is a number of the question or the
result of an earlier equation or introduced by a valid rewrite (no number from nowhere), the final
answer is the result of a true equation (the derivation reaches it), and the text shows no program
output it could not have run.

A valid rewrite: in a true chain `e0 = e1 = e2 ...` every part after the first has the first part's
value, so the numbers it introduces are a decomposition or regrouping of numbers already there
(`724 * 191 = 724 * (200 - 9)`, `1872 * 15 = 1872 * (10 + 5) = 1872 * 10 + 1872 * 5`,
`-41 + 25 + 36 = -41 + 61`). Only the first part of a chain must be made of known numbers: that is
where a fabrication starts (`Let me recompute. 1000 + 345 = 1345`, 1000 and 345 from nowhere).
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Sequence

_LATEX_SUBS = [
    (r"\{,\}", ""),  # LaTeX thousands separator 1{,}200
    (r"\\qquad|\\quad|;", " ; "),  # separators between equations: a chain never spans them
    (r"\\left|\\right|\\,|\\;|\\!|&", " "),
    (r"\\(?:times|cdot)", "*"),
    (r"×|·|∗", "*"),
    (r"\\div|÷", "/"),
    (r"−|–", "-"),
    (r"\\(?:text|mathrm|textbf|mathbf)\{([^{}]*)\}", r" \1 "),
    (r"\\d?frac\{([^{}]+)\}\{([^{}]+)\}", r"((\1)/(\2))"),
    (r"\\\(|\\\)|\\\[|\\\]|\$", " "),
    (r"\\boxed\{([^{}]*)\}", r" ; \1 ; "),
    (r"\\[a-zA-Z]+", " § "),  # any other LaTeX command (\\sqrt, \\log, ...): a chain never starts after it
    (r"[{}]", " "),
    (r"\*\*", " "),  # markdown bold, not a power (powers are out of scope)
    (r"(?<=\d)\s*[xX]\s*(?=[-(\d])", " * "),  # 3 x 4
    (r"(?<=\d)\s+(?:[a-zA-Z]+\s+){1,2}(?=[-+*/=])", " "),  # unit words: 24 legs + 64 legs = 88
    (r"\.(?=\s|$)", " ; "),  # sentence ends (the text's last one too): "... = 141. 141 + 5 = 146" is two chains
]
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_CHAIN = re.compile(r"[-+*/().\d\s]*\d[-+*/().\d\s]*(?:=[-+*/().\d\s]*\d[-+*/().\d\s]*)+")
_LIST_MARKER = re.compile(r"^\s*#*\s*(?:[-*]\s+|\(?[\da-z][.)]\s+|\d+[.)]\s+|step\s+\d+\s*[:.]?\s*)",
                          re.IGNORECASE)
_UNSUPPORTED_EDGE = set("^_!{}\\§")
_OPERATION = re.compile(r"[\d)]\s*[-+*/]\s*[-(\d]|-\s*\(")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
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
    values: list[str]  # value of each part that parsed
    ok: bool  # every adjacent pair of parsed parts is equal
    operands: list[str]  # numeric literals of every part (absolute values)
    partials: list[str]  # values of every sub-expression (what a later part may refer to)
    # Numbers of the parts after the first of a true chain: a rewrite of the first part's value
    # introduces them, so they need no earlier source (empty when a link is false).
    rewritten: list[str] = field(default_factory=list)


def _balance(part: str) -> str:
    """Drop parentheses left unbalanced at a part's ends: "(24 + 64 = 88)" -> "24 + 64", "88"."""
    p = part.strip()
    while p.startswith("(") and p.count("(") > p.count(")"):
        p = p[1:].strip()
    while p.endswith(")") and p.count(")") > p.count("("):
        p = p[:-1].strip()
    return p


def _subvalues(expr: str) -> list[Fraction]:
    """Values of every binary sub-expression of an arithmetic expression (absolute)."""
    out = []
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        return out
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp):
            v = evaluate(ast.unparse(node))
            if v is not None:
                out.append(abs(v))
    return out


def equations(step_text: str, step: int = 0) -> list[Equation]:
    """Every arithmetic chain `e1 = e2 = ...` in a step, each link between parsable parts checked.
    A chain glued to a power, index, factorial, root or function (`3^2 + 16 = 25`, `f(3) + 2 = 11`)
    is out of scope and skipped, never failed."""
    out = []
    for line in normalize(step_text).splitlines():
        line = _LIST_MARKER.sub(" ", line)
        for m in _CHAIN.finditer(line):
            before = line[: m.start()].rstrip()[-1:]
            after = line[m.end():].lstrip()[:1]
            if (before and before in _UNSUPPORTED_EDGE) or after in ("^", "!", "_", "§") \
                    or (before.isalpha() and m.group(0)[:1] == "("):
                continue
            parts = [_balance(p) for p in m.group(0).split("=")]
            vals = [evaluate(p) for p in parts]
            # An operation: a binary operator (after a number or a bracket) or the negation of a bracket.
            if not any(_OPERATION.search(p) for p, v in zip(parts, vals) if v is not None):
                continue  # "x = 5" or "= 3" alone: nothing to check
            links = [(vals[i], vals[i + 1]) for i in range(len(parts) - 1) if vals[i] is not None and vals[i + 1] is not None]
            if not links:
                continue
            ok = all(a == b for a, b in links)
            parsed = [(p, v) for p, v in zip(parts, vals) if v is not None]
            operands = [str(Fraction(x)) for p, _ in parsed for x in _NUMBER.findall(p)]
            partials = [str(x) for p, _ in parsed for x in _subvalues(p)] + [str(abs(v)) for _, v in parsed]
            rewritten = [str(Fraction(x)) for p, _ in parsed[1:] for x in _NUMBER.findall(p)] if ok else []
            out.append(Equation(step, m.group(0).strip(), [str(v) for _, v in parsed], ok, operands, partials, rewritten))
    return out


def numbers_in(text: str) -> set[Fraction]:
    return {Fraction(x) for x in _NUMBER.findall(normalize(text))}


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
    unsupported: str | None = None  # an operand that comes from nowhere (first one)

    def to_dict(self) -> dict:
        return asdict(self)


def check_steps(steps: Sequence[str], answer: str | None = None, question: str | None = None) -> StepCheck:
    """Check a derivation given as its steps (texts). `answer`: the final answer it must reach;
    `question`: its numbers, the results of earlier equations and the numbers their rewrites introduced
    are the only operands the first part of a chain may use."""
    eqs = [e for i, s in enumerate(steps) for e in equations(s, i)]
    false = next((e for e in eqs if not e.ok), None)
    invented = bool(_CODE_THEN_OUTPUT.search("".join(steps)))
    target = evaluate(normalize(answer).strip()) if answer else None
    reaches = answer is None or (target is not None and any(e.ok and Fraction(e.values[-1]) == target for e in eqs))
    unsupported = None
    if question is not None:
        # 0 and 1 are never from nowhere: adding 0 or multiplying by 1 (or -1, a sign) changes no value.
        known = numbers_in(question) | {Fraction(0), Fraction(1)}
        for e in eqs:
            # A chain's own results never justify its first part ("1345 = 1000 + 345" with 1345 unknown).
            rewritten = {Fraction(x) for x in e.rewritten}
            missing = [x for x in e.operands if Fraction(x) not in known and Fraction(x) not in rewritten]
            if missing and unsupported is None:
                unsupported = f"step {e.step}: {missing[0]} in '{e.text}'"
            known |= {Fraction(x) for x in e.partials} | rewritten
    if false is not None:
        reason = f"false equation in step {false.step}: {false.text}"
    elif invented:
        reason = "program output it could not have run"
    elif not eqs:
        reason = "no checkable equation"
    elif unsupported is not None:
        reason = f"operand from nowhere ({unsupported})"
    elif not reaches:
        reason = "no true equation reaches the final answer"
    else:
        reason = "ok"
    return StepCheck(ok=reason == "ok", n_equations=len(eqs), first_false_step=None if false is None else false.step,
                     first_false=None if false is None else false.text, reaches_answer=reaches,
                     invented_output=invented, reason=reason, unsupported=unsupported)
