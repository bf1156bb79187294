"""Hint templates, answer-guided prompts, hint-span replacement and the leak checks.

The student must never see the answer it was handed: a GEAR training sample is
prefix + reflection + continuation, where the hint's exact token span is replaced by a neutral
reflection phrase ("reflection"), removed ("strip") or kept ("keep", for ablations only).
"""

from __future__ import annotations

import re
from typing import Sequence

HINT_MODES = ("reflection", "strip", "keep")


def text_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a piece of assistant text (no special tokens added)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def render(template: str, answer: str) -> str:
    return template.replace("{answer}", answer)


def training_ids(prefix: Sequence[int], hint: Sequence[int], continuation: Sequence[int], mode: str,
                 reflection: Sequence[int]) -> tuple[list[int], tuple[int, int]]:
    """The completion the student trains on, and the span that replaced the hint in it."""
    prefix, continuation = list(prefix), list(continuation)
    if mode == "reflection":
        middle = list(reflection)
    elif mode == "strip":
        middle = []
    elif mode == "keep":
        middle = list(hint)
    else:
        raise ValueError(f"unknown hint mode {mode!r}; use one of {HINT_MODES}")
    return prefix + middle + continuation, (len(prefix), len(prefix) + len(middle))


# Phrases by which a continuation gives away that it was told the answer.
_HINT_PHRASES = [
    r"\bhint\b", r"\bgiven (?:final )?answer\b", r"\bi (?:know|was told|am told)\b",
    r"\bthe (?:final )?answer (?:must|should) be\b", r"\bwe (?:know|are told) (?:that )?the (?:final )?answer\b",
    r"\bexpected (?:final )?answer\b", r"\bprovided answer\b", r"\bcorrect answer is\b",
    r"\breference answer\b", r"\bfor reference\b", r"\bas given\b",
    r"\bmatches the (?:given|reference|expected|provided|correct)\b",
]
_HINT_RE = re.compile("|".join(_HINT_PHRASES), re.IGNORECASE)


def mentions_hint(text: str) -> str | None:
    """The phrase by which `text` refers to a handed-over answer, or None."""
    m = _HINT_RE.search(text)
    return m.group(0) if m else None


def _number_pattern(answer: str) -> re.Pattern | None:
    a = answer.strip().replace(",", "")
    if not re.fullmatch(r"-?\d+(?:\.\d+)?", a):
        return None
    digits = a.lstrip("-")
    grouped = f"{int(float(digits)):,}" if "." not in digits else digits
    alts = {re.escape(digits), re.escape(grouped)}
    return re.compile(r"(?<![\d.,])(?:-\s*)?(?:" + "|".join(alts) + r")(?!\d|[.,]\d)")


_LIST_NUMBER = re.compile(r"(?:^|\n)\s*#*\s*(?:\**step\s+)?$", re.IGNORECASE)


def states_answer_before_deriving(text: str, answer: str) -> bool:
    """True when the answer's first appearance is neither the result of an equation (right after
    `=`) nor inside the final box: the text asserts the answer before any step derives it.
    Only numeric answers are checked (others return False)."""
    pat = _number_pattern(answer)
    if pat is None:
        return False
    for m in pat.finditer(text):
        before = text[: m.start()]
        after = text[m.end():]
        # A list marker or step number ("5." at a line start, "Step 5:") is not the answer.
        if _LIST_NUMBER.search(before) and re.match(r"\s*[.):]", after):
            continue
        # Strip wrappers between "=" and the number: spaces, $, \(, **bold**, \mathbf{, \boxed{.
        stripped = re.sub(r"(?:\s|\$|\\\(|\*\*|\\mathbf\{|\\textbf\{|\\boxed\{|boxed\{|\{)*$", "", before)
        return not (before.rstrip().endswith(("\\boxed{", "boxed{")) or re.search(r"(=|\\approx|≈)$", stripped))
    return False
