import math

import numpy as np
import pytest

from heal.entropy import (find_breakpoint, step_means, step_spans_from_pieces, surges, token_pieces, topk_entropy,
                          window_candidates)


def test_step_spans_split_at_blank_lines():
    pieces = ["Step", " one", ".\n\n", "Two", " =", " 3", "\n\n", "\n", "Done"]
    assert step_spans_from_pieces(pieces) == [(0, 3), (3, 7), (7, 9)]
    # A separator split over two tokens still ends the step at the token that completes it.
    assert step_spans_from_pieces(["a", "\n", "\nb", "c"]) == [(0, 3), (3, 4)]
    # Trailing whitespace is merged into the last step; a text without blank lines is one step.
    assert step_spans_from_pieces(["a", "\n\n", "  "]) == [(0, 3)]
    assert step_spans_from_pieces(["a", "b"]) == [(0, 2)]


def test_token_pieces_concatenate_to_the_text(smollm2):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2.hf)
    text = "First, 12 + 30 = 42.\n\nThen 42 × 2 = 84 — done ✓.\n\n\\boxed{84}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = token_pieces(tok, ids)
    assert "".join(pieces) == tok.decode(ids) and len(pieces) == len(ids)
    assert len(step_spans_from_pieces(pieces)) == 3


def test_step_means_and_surges():
    ent = [1, 1, 1, 3, 3, 0.5, 0.5]
    spans = [(0, 3), (3, 5), (5, 7)]
    np.testing.assert_allclose(step_means(ent, spans), [1, 3, 0.5])
    np.testing.assert_allclose(surges([1, 3, 0.5]), [2, -2.5])


def test_window_candidates():
    spans = [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50), (50, 60), (60, 70), (70, 80), (80, 90)]
    assert window_candidates(spans, 90, "first_third_tokens") == [1, 2]  # starts < 30
    assert window_candidates(spans, 90, "first_third_steps") == [1, 2, 3]  # ceil(9/3) = 3
    assert window_candidates(spans[:4], 40, "first_third_steps") == [1, 2, 3]  # at least 3 candidates
    assert window_candidates(spans, 90, "all") == list(range(1, 9))
    with pytest.raises(ValueError):
        window_candidates(spans, 90, "middle")


def crafted():
    # Six steps of 10 tokens; step entropies 0.5, 0.6, 0.4, 2.0 (surge +1.6), 0.7, 2.4 (surge +1.7).
    levels = [0.5, 0.6, 0.4, 2.0, 0.7, 2.4]
    ent = np.repeat(levels, 10)
    spans = [(10 * i, 10 * i + 10) for i in range(6)]
    return ent, spans


def test_breakpoint_and_backup_on_crafted_series():
    ent, spans = crafted()
    bp = find_breakpoint(ent, spans, "all", backup=1)
    assert (bp.step, bp.surge) == (5, pytest.approx(1.7))
    assert bp.kept_steps == 4 and bp.cut_token == 40 and not bp.restart  # keep steps 0..b-2 = 0..3
    bp0 = find_breakpoint(ent, spans, "all", backup=0)
    assert bp0.kept_steps == 5 and bp0.cut_token == 50  # cut right before the surging step
    bp2 = find_breakpoint(ent, spans, "first_third_steps", backup=1)
    assert bp2.step == 3 and bp2.surge == pytest.approx(1.6) and bp2.cut_token == 20
    # Paper window: only steps starting in the first 20 tokens (1 only): b = 1, back-up 1 keeps nothing.
    bp3 = find_breakpoint(ent, spans, "first_third_tokens", backup=1)
    assert bp3.step == 1 and bp3.kept_steps == 0 and bp3.cut_token == 0 and bp3.restart


def test_token_level_fallback_cuts_at_the_preceding_line_break():
    ent = [0.2] * 12 + [3.0] * 6
    pieces = ["x"] * 5 + ["\n"] + ["y"] * 12
    bp = find_breakpoint(ent, [(0, 18)], pieces=pieces, smooth_width=3)
    assert bp.mode == "token_fallback" and 10 <= bp.token <= 13
    assert bp.cut_token == 6 and not bp.restart
    nobreak = find_breakpoint(ent, [(0, 18)], pieces=["x"] * 18, smooth_width=3)
    assert nobreak.restart and nobreak.cut_token == 0


def test_topk_entropy_bounds_the_exact_value():
    rng = np.random.default_rng(0)
    vocab, k = 5000, 20
    for alpha in (0.05, 0.3, 1.0):
        p = rng.dirichlet(np.full(vocab, alpha))
        exact = float(-(p[p > 0] * np.log(p[p > 0])).sum())
        top = np.sort(p)[::-1][:k]
        est = topk_entropy(np.log(top))
        tail = 1 - top.sum()
        assert est <= exact + 1e-9  # merging the tail into one bucket lowers entropy
        assert exact <= est + tail * math.log(vocab - k) + 1e-9
    assert topk_entropy(np.log([0.5, 0.5])) == pytest.approx(math.log(2))
    assert topk_entropy([0.0]) == pytest.approx(0.0)


def _prefix_pieces(tokenizer, ids):
    """The definition token_pieces implements: decode every prefix (quadratic; the reference)."""
    pieces, prev = [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[: i + 1], skip_special_tokens=False)
        if text.endswith("\ufffd"):
            pieces.append("")
            continue
        pieces.append(text[len(prev):])
        prev = text
    return pieces


def _old_step_spans(pieces, sep="\n\n"):
    """The previous (quadratic) step splitter, kept as the reference for the one-pass version."""
    spans, start, text = [], 0, ""
    for i, piece in enumerate(pieces):
        text += piece
        if sep in text and text.strip():
            spans.append((start, i + 1))
            start, text = i + 1, ""
        elif spans and not text.strip() and sep in text:
            spans[-1] = (spans[-1][0], i + 1)
            start, text = i + 1, ""
    if start < len(pieces):
        if text.strip() or not spans:
            spans.append((start, len(pieces)))
        else:
            spans[-1] = (spans[-1][0], len(pieces))
    return spans


def test_linear_pieces_and_steps_equal_their_definitions(smollm2):
    import random

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2.hf)
    rng = random.Random(0)
    words = ["Step", " 1:", " 361", " -", " 220", " =", " 141.", "\n", "\n\n", " ", "Ünï", "数学", "😀", "\\boxed{",
             "}", "  ", "\n\n\n", "Wait,", " let", " me", " re-check", "<|im_end|>"]
    for _ in range(60):
        text = "".join(rng.choice(words) for _ in range(rng.randint(1, 80)))
        ids = tok(text, add_special_tokens=False)["input_ids"]
        pieces = token_pieces(tok, ids)
        assert pieces == _prefix_pieces(tok, ids)
        assert step_spans_from_pieces(pieces) == _old_step_spans(pieces)
        chars = list(text)  # one character per piece: separators split across pieces
        assert step_spans_from_pieces(chars) == _old_step_spans(chars)
