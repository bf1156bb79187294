"""Reasoning blocks: `<think> ... </think>` followed by a short answer (R1-distill, QwQ, Qwen3).

A model's reasoning format is three facts: the start and end tags, and whether its chat template
pre-fills the start tag (R1-distill and QwQ templates end the generation prompt with `<think>\\n`, so
the completion begins inside the block and never contains the start tag; Qwen3 lets the model write
it). `resolve` turns the config's `reasoning` block into a `Format`, reading the pre-fill from the
chat template itself rather than trusting a preset. `spans` finds, in a completion's token ids, the
reasoning span and the answer span; the final answer is read from the answer part only, and a
completion that ends (for length) before the end tag is truncated-in-reasoning.

Everything here works on token ids and decoded text, once per record, in linear time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

# Tags and template arguments of the families heal knows. `prefilled` is read from the template;
# the preset's value is the fallback for a tokenizer without a chat template.
PRESETS: dict[str, dict] = {
    "none": {},
    "r1": {"start": "<think>", "end": "</think>", "prefilled": True},  # DeepSeek-R1-Distill-*
    "qwq": {"start": "<think>", "end": "</think>", "prefilled": True},  # QwQ-32B
    "qwen3": {"start": "<think>", "end": "</think>", "prefilled": False,
              "template_kwargs": {"enable_thinking": True}},
}


@dataclass(frozen=True)
class Format:
    """A resolved reasoning format (`enabled` False: an instruct model, no block)."""

    enabled: bool = False
    start: str = "<think>"
    end: str = "</think>"
    prefilled: bool = False  # the prompt ends with the start tag: completions begin inside the block
    template_kwargs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"enabled": self.enabled, "start": self.start, "end": self.end, "prefilled": self.prefilled,
                "template_kwargs": dict(self.template_kwargs)}


NONE = Format()


@dataclass
class Spans:
    """Token positions inside one completion (half-open [a, b))."""

    reasoning: tuple[int, int] | None  # the block's content: after the start tag, before the end tag
    answer: tuple[int, int] | None  # after the end tag to the end (None: the block never closed)
    closed: bool  # the end tag was written

    def to_dict(self) -> dict:
        return {"reasoning_span": list(self.reasoning) if self.reasoning else None,
                "answer_span": list(self.answer) if self.answer else None, "reasoning_closed": self.closed}


def resolve(cfg, tokenizer=None) -> Format:
    """The Format a `reasoning` config block names. With a tokenizer, `prefilled` (when the config
    leaves it unset) is read from the chat template: does the generation prompt end with the start tag?"""
    if cfg is None or cfg.preset == "none" and not cfg.start:
        return NONE
    preset = PRESETS.get(cfg.preset, {})
    start = cfg.start or preset.get("start", "<think>")
    end = cfg.end or preset.get("end", "</think>")
    kwargs = {**preset.get("template_kwargs", {}), **(cfg.template_kwargs or {})}
    prefilled = cfg.prefilled
    if prefilled is None:
        prefilled = template_prefills(tokenizer, start, kwargs) if tokenizer is not None else None
    if prefilled is None:
        prefilled = preset.get("prefilled", False)
    return Format(True, start, end, bool(prefilled), kwargs)


def template_prefills(tokenizer, start: str, template_kwargs: dict | None = None) -> bool | None:
    """True when the chat template's generation prompt ends with the start tag (None: no template)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    text = tokenizer.apply_chat_template([{"role": "user", "content": "1+1?"}], add_generation_prompt=True,
                                         tokenize=False, **(template_kwargs or {}))
    return text.rstrip().endswith(start)


def _find(ids: Sequence[int], pattern: Sequence[int], start: int = 0) -> int:
    """First index >= start where `pattern` occurs in `ids` (-1 if none). Linear for short patterns."""
    n = len(pattern)
    if n == 0:
        return -1
    first = pattern[0]
    for i in range(start, len(ids) - n + 1):
        if ids[i] == first and list(ids[i:i + n]) == list(pattern):
            return i
    return -1


def tag_ids(tokenizer, tag: str) -> list[int]:
    return list(tokenizer(tag, add_special_tokens=False)["input_ids"])


def spans(token_ids: Sequence[int], tokenizer, fmt: Format) -> Spans:
    """Where the reasoning and the answer are in a completion. Tags are matched as token sequences
    (in every family above each tag is one added token, so a tag never merges with its neighbours)."""
    if not fmt.enabled:
        return Spans(None, (0, len(token_ids)), True)
    begin = 0
    if not fmt.prefilled:
        s = tag_ids(tokenizer, fmt.start)
        at = _find(token_ids, s)
        # Only a start tag at the very beginning (after whitespace) opens the block.
        if at >= 0 and not tokenizer.decode(list(token_ids[:at])).strip():
            begin = at + len(s)
    e = tag_ids(tokenizer, fmt.end)
    close = _find(token_ids, e, begin)
    if close < 0:
        return Spans((begin, len(token_ids)), None, False)
    return Spans((begin, close), (close + len(e), len(token_ids)), True)


def answer_text(text: str, fmt: Format) -> str | None:
    """The part of a completion's text the final answer is read from: after the end tag (None when
    the block never closed: a reasoning trace cut off has no answer yet)."""
    if not fmt.enabled:
        return text
    at = text.find(fmt.end)
    return None if at < 0 else text[at + len(fmt.end):]


def for_student(text: str, teacher: Format, student: Format) -> str:
    """A teacher completion's text as the student must produce it after its own prompt. A teacher
    whose template pre-fills the start tag wrote no start tag; a student whose template does not
    pre-fill it must write it (and the reverse: never twice)."""
    if not (teacher.enabled and student.enabled):
        return text
    had_start = not teacher.prefilled
    needs_start = not student.prefilled
    body = text
    if had_start:
        stripped = body.lstrip()
        if stripped.startswith(teacher.start):
            body = stripped[len(teacher.start):]
    body = body if teacher.end == student.end else body.replace(teacher.end, student.end, 1)
    if needs_start:
        return student.start + ("" if body.startswith("\n") else "\n") + body
    # the student's prompt already ends with "<think>\n": the text goes on from there
    return body[1:] if had_start and body.startswith("\n") else body
