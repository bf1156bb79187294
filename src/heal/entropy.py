"""Entropy dynamics of a trajectory: steps, step entropy, surges, the breakpoint and the cut.

Pure functions over arrays (and, for step splitting, a tokenizer's per-token text), so each formula
is testable on hand-made input. Definitions: docs/method.md, "GEAR".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

WINDOWS = ("first_third_tokens", "first_third_steps", "all")


def token_pieces(tokenizer, token_ids: Sequence[int], window: int = 8) -> list[str]:
    """The text each token contributes, in linear time: each token is decoded with `window` tokens
    of left context (never the whole prefix: an 8k-token trace would cost 8k decodes of ~4k tokens).
    A multi-byte character that straddles tokens lands on the token that completes it (the tokens
    before it get ""). Equal to decoding every prefix (tests/test_entropy.py checks it on real
    tokenizers)."""
    pieces, start = [], 0  # start: the first token whose text is not out yet
    for i in range(len(token_ids)):
        lo = max(0, start - window)
        after = tokenizer.decode(list(token_ids[lo : i + 1]), skip_special_tokens=False)
        if after.endswith("\ufffd"):  # an incomplete character: a later token completes it
            pieces.append("")
            continue
        before = tokenizer.decode(list(token_ids[lo:start]), skip_special_tokens=False) if start > lo else ""
        pieces.append(after[len(before):])
        start = i + 1
    return pieces


def step_spans_from_pieces(pieces: Sequence[str], sep: str = "\n\n") -> list[tuple[int, int]]:
    """Split a token sequence into steps at blank lines. A step ends after the token that completes
    a `sep` (the separator stays with the step it ends); spans are [start, end) token positions.
    Whitespace-only steps are merged into the step before them."""
    spans: list[tuple[int, int]] = []
    # One pass: the step's text is not kept, only whether it holds a separator (seen across piece
    # boundaries through the last len(sep) - 1 characters) and any non-blank character.
    start, tail, has_sep, content = 0, "", False, False
    for i, piece in enumerate(pieces):
        has_sep = has_sep or sep in tail + piece
        tail = (tail + piece)[-(len(sep) - 1):] if len(sep) > 1 else ""
        content = content or bool(piece.strip())
        if has_sep and content:
            spans.append((start, i + 1))
            start, tail, has_sep, content = i + 1, "", False, False
        elif spans and has_sep:  # more blank lines: they end the previous step
            spans[-1] = (spans[-1][0], i + 1)
            start, tail, has_sep, content = i + 1, "", False, False
    if start < len(pieces):
        if content or not spans:
            spans.append((start, len(pieces)))
        else:
            spans[-1] = (spans[-1][0], len(pieces))
    return spans


def step_spans(tokenizer, token_ids: Sequence[int]) -> list[tuple[int, int]]:
    return step_spans_from_pieces(token_pieces(tokenizer, token_ids))


def step_means(values: Sequence[float], spans: Sequence[tuple[int, int]]) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return np.array([v[a:b].mean() if b > a else 0.0 for a, b in spans])


def surges(step_entropy: Sequence[float]) -> np.ndarray:
    """d_i = h_i - h_(i-1) for i >= 1 (index 0 of the result is step 1)."""
    h = np.asarray(step_entropy, dtype=np.float64)
    return h[1:] - h[:-1]


def window_candidates(spans: Sequence[tuple[int, int]], n_tokens: int, window: str) -> list[int]:
    """Steps i >= 1 eligible as breakpoints."""
    n = len(spans)
    if window == "all":
        return list(range(1, n))
    if window == "first_third_tokens":  # paper: steps that start in the first third of the tokens
        return [i for i in range(1, n) if spans[i][0] < n_tokens / 3]
    if window == "first_third_steps":  # the first ceil(n/3) steps, at least 3 candidates
        last = max(math.ceil(n / 3), 3)
        return list(range(1, min(n, last + 1)))
    raise ValueError(f"unknown window {window!r}; use one of {WINDOWS}")


@dataclass
class Breakpoint:
    step: int  # b: the step where entropy surged (-1 for the token-level fallback)
    token: int  # first token of step b (or the token of the surge, in the fallback)
    surge: float  # d_b (or the smoothed token-level jump)
    cut_token: int  # the prefix kept is token_ids[:cut_token]
    kept_steps: int  # how many whole steps the prefix keeps
    restart: bool  # nothing kept: answer-guided sampling from scratch
    mode: str  # "step" | "token_fallback"
    n_steps: int
    candidates: list[int]

    def to_dict(self) -> dict:
        return asdict(self)


def smooth(x: Sequence[float], width: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if width <= 1 or len(x) < width:
        return x
    # Edge padding: zero padding would fake a jump up from nothing at the start.
    padded = np.pad(x, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def find_breakpoint(entropy: Sequence[float], spans: Sequence[tuple[int, int]], window: str = "first_third_tokens",
                    backup: int = 1, pieces: Sequence[str] | None = None, smooth_width: int = 5) -> Breakpoint:
    """The step with the largest surge inside the window, then back up `backup` steps.

    b = argmax_{i in window} (h_i - h_(i-1)); the prefix keeps steps 0 .. b-1-backup (paper: back
    up one step, i.e. keep 0 .. b-2). With fewer than two steps (or an empty window) the surge is
    token-level on a smoothed entropy, and the cut goes to the line break before it (needs
    `pieces`; without a line break it is a restart).
    """
    n_tokens = len(entropy)
    h = step_means(entropy, spans)
    cands = window_candidates(spans, n_tokens, window) if len(spans) >= 2 else []
    if cands:
        d = surges(h)
        b = max(cands, key=lambda i: (d[i - 1], -i))  # ties: the earliest
        keep = max(0, b - backup)
        cut = spans[keep - 1][1] if keep > 0 else 0
        return Breakpoint(step=b, token=spans[b][0], surge=float(d[b - 1]), cut_token=cut, kept_steps=keep,
                          restart=cut == 0, mode="step", n_steps=len(spans), candidates=cands)
    # Token-level fallback.
    s = smooth(entropy, smooth_width)
    if len(s) < 2:
        return Breakpoint(-1, 0, 0.0, 0, 0, True, "token_fallback", len(spans), [])
    jumps = s[1:] - s[:-1]
    t = int(np.argmax(jumps)) + 1
    cut = 0
    if pieces is not None:
        for i in range(t - 1, -1, -1):
            if "\n" in pieces[i]:
                cut = i + 1
                break
    return Breakpoint(step=-1, token=t, surge=float(jumps[t - 1]), cut_token=cut, kept_steps=0,
                      restart=cut == 0, mode="token_fallback", n_steps=len(spans), candidates=[])


def topk_entropy(top_logprobs: Sequence[float]) -> float:
    """Entropy estimate from the top-k log-probabilities only (vLLM / OpenAI-compatible servers give
    k <= 20): the k known outcomes plus the remaining mass r = 1 - sum p_i as one bucket.
    Merging the tail into one outcome can only lower entropy, so this is a lower bound of the exact
    value, and exact <= estimate + r * log(V - k) for a vocabulary of V."""
    p = np.exp(np.asarray(top_logprobs, dtype=np.float64))
    total = p.sum()
    if total > 1.0:  # rounding in the server's log-probs
        p = p / total
        total = 1.0
    r = max(0.0, 1.0 - total)
    h = float(-(p[p > 0] * np.log(p[p > 0])).sum())
    return h + (-r * math.log(r) if r > 0 else 0.0)
