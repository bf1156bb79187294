"""Breakpoint locators for GEAR (`gear.locator`): where to cut a failed trajectory.

- `entropy`: the paper's surge (heal.entropy.find_breakpoint), inside `gear.window`, backed up
  `gear.backup` steps. Free where Stage 0 recorded the entropy.
- `random`: a seeded random step of the same window, same back-up (the control).
- `first_error`: the step checker's first false step (an oracle where steps are checkable); where it
  finds none, the entropy breakpoint (recorded as a fallback).
- `rollout`: Monte Carlo value of each step boundary: c hint-free continuations from the prefix
  that keeps steps 0..k-1, v_k = share answer-correct; the cut goes where success drops most.
- `judge`: the teacher's own verdict after each step: the log-probability of "incorrect" minus
  that of "correct" in a new user turn asking about the last step; the cut goes before the first
  step judged incorrect.

`first_error`, `rollout` and `judge` locate the faulty step itself, so the prefix keeps every step
before it (no back-up); `entropy` and `random` locate a surge, which the paper backs up from.
Every locator reports its own cost in teacher tokens: `generated` (sampled) and `forced`
(teacher-forced, evaluated once each with a prefix-caching engine). Engines are used only through
the protocol in heal.engines.base. The choice rules are pure functions, tested by hand.
"""

from __future__ import annotations

import random as _random
from typing import Sequence

import numpy as np

from heal.entropy import Breakpoint, find_breakpoint, window_candidates
from heal.stepcheck import check_steps

LOCATORS = ("entropy", "random", "first_error", "rollout", "judge")


def cut_before(spans: Sequence[tuple[int, int]], b: int, backup: int, mode: str, score: float,
               candidates: list[int]) -> Breakpoint:
    """The Breakpoint that keeps steps 0 .. b-1-backup (nothing: a restart)."""
    keep = max(0, b - backup)
    cut = spans[keep - 1][1] if keep > 0 else 0
    return Breakpoint(step=b, token=spans[b][0] if 0 <= b < len(spans) else 0, surge=float(score), cut_token=cut,
                      kept_steps=keep, restart=cut == 0, mode=mode, n_steps=len(spans), candidates=candidates)


def random_step(candidates: Sequence[int], seed: int) -> int:
    """A uniformly random candidate, reproducible from `seed` (a per-trajectory seed)."""
    return _random.Random(seed).choice(list(candidates))


def rollout_step(values: Sequence[float]) -> int:
    """values[k]: estimated success of hint-free continuations after keeping k steps (k = 0..n-1);
    keeping all n steps is the failed trajectory itself (value 0). Returns the step b whose inclusion
    drops success most (keep 0..b-1). Ties: the boundary with more success before the step, then the
    earliest (so when nothing ever succeeds, a restart)."""
    v = list(values) + [0.0]
    drops = [v[k] - v[k + 1] for k in range(len(values))]
    return max(range(len(drops)), key=lambda k: (drops[k], v[k], -k))


def judge_step(margins: Sequence[float], threshold: float = 0.0) -> int:
    """margins[k] = log p(incorrect) - log p(correct) after step k. The first step judged incorrect
    (margin > threshold); if none, the step judged least correct (ties: the earliest)."""
    for k, m in enumerate(margins):
        if m > threshold:
            return k
    return max(range(len(margins)), key=lambda k: (margins[k], -k))


def first_false_step(steps: Sequence[str], answer: str, question: str) -> int | None:
    return check_steps(steps, answer, question).first_false_step


def judge_suffix_ids(tokenizer, question: str) -> list[int]:
    """Token ids that close the assistant's turn and open a user turn asking `question`, then the
    assistant's answer, as the model's own chat template writes them (found by rendering a
    conversation with a placeholder answer and keeping what follows it)."""
    mark = "\u2063PLACEHOLDER\u2063"
    msgs = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": mark},
            {"role": "user", "content": question}]
    text = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    suffix = text[text.index(mark) + len(mark):]
    return list(tokenizer(suffix, add_special_tokens=False)["input_ids"])


def judge_margins(engine, prompt_ids: list[int], traj_ids: list[int], spans, suffix_ids: list[int],
                  yes_ids: list[int], no_ids: list[int]) -> tuple[list[float], int]:
    """log p(no) - log p(yes) of the verdict after each step, and the forced tokens a prefix-caching
    engine evaluates for them (each step once, then the question and both verdicts)."""
    margins, forced = [], 0
    for a, b in spans:
        ctx = list(prompt_ids) + list(traj_ids[:b]) + list(suffix_ids)
        lp = {w: sum(engine.score(ctx, ids).logprobs) for w, ids in (("yes", yes_ids), ("no", no_ids))}
        margins.append(float(lp["no"] - lp["yes"]))
        forced += (b - a) + len(suffix_ids) + len(yes_ids) + len(no_ids)
    return margins, forced


def rollout_values(engine, verify, prompt_ids: list[int], traj_ids: list[int], spans, params, c: int,
                   seed: int) -> tuple[list[float], int, list[list[bool]]]:
    """v_k for k = 0..n-1: the share of c hint-free continuations from the prefix keeping k steps
    whose answer is correct (`verify(text) -> bool` on prefix + continuation); the generated tokens
    they cost; every outcome. One generate call for every boundary (a batching engine packs them)."""
    cuts = [0] + [b for _, b in spans[:-1]]
    prompts = [list(prompt_ids) + list(traj_ids[:cut]) for cut in cuts]
    comps = engine.generate(prompts, params, n=c, record_entropy=False,
                            seeds=[seed + 1000 * k for k in range(len(prompts))])
    outcomes = []
    for row, cut in zip(comps, cuts):
        prefix = engine.tokenizer.decode(list(traj_ids[:cut]), skip_special_tokens=True)
        outcomes.append([bool(verify(prefix + x.text)) for x in row])
    generated = sum(len(x.token_ids) for row in comps for x in row)
    return [float(np.mean(o)) for o in outcomes], generated, outcomes


def locate(name: str, *, entropy, spans, pieces, gear_cfg, steps: Sequence[str] | None = None,
           answer: str | None = None, question: str | None = None, source_seed: int = 0,
           engine=None, prompt_ids=None, traj_ids=None, params=None, verify=None) -> tuple[Breakpoint, dict]:
    """The breakpoint of one trajectory under locator `name`, and what the locator saw and cost:
    {"locator", "scores", "fallback", "cost": {"generated": g, "forced": f}}."""
    g = gear_cfg
    info: dict = {"locator": name, "scores": None, "fallback": None, "cost": {"generated": 0, "forced": 0}}
    surge = find_breakpoint(entropy, spans, g.window, g.backup, pieces, g.smooth_width)
    if name == "entropy":
        return surge, info
    if len(spans) < 2:  # one step: nothing to choose between, the surge's token-level fallback decides
        info["fallback"] = "entropy (fewer than two steps)"
        return surge, info
    if name == "random":
        cands = window_candidates(spans, len(entropy), g.window)
        if not cands:
            info["fallback"] = "entropy (empty window)"
            return surge, info
        b = random_step(cands, source_seed)
        return cut_before(spans, b, g.backup, "random", 0.0, cands), info
    every = list(range(len(spans)))
    if name == "first_error":
        b = first_false_step(steps, answer, question)
        if b is None:
            info["fallback"] = "entropy (no false step)"
            return surge, info
        return cut_before(spans, b, 0, "first_error", 1.0, every), info
    if name == "rollout":
        values, generated, outcomes = rollout_values(engine, verify, prompt_ids, traj_ids, spans, params,
                                                     g.rollout_samples, source_seed)
        info.update(scores=values, outcomes=outcomes, cost={"generated": generated, "forced": 0})
        b = rollout_step(values)
        drop = values[b] - (values[b + 1] if b + 1 < len(values) else 0.0)
        return cut_before(spans, b, 0, "rollout", drop, every), info
    if name == "judge":
        tok = engine.tokenizer
        suffix = judge_suffix_ids(tok, g.judge_question)
        yes = list(tok(g.judge_words[0], add_special_tokens=False)["input_ids"])
        no = list(tok(g.judge_words[1], add_special_tokens=False)["input_ids"])
        margins, forced = judge_margins(engine, prompt_ids, traj_ids, spans, suffix, yes, no)
        info.update(scores=[round(m, 4) for m in margins], cost={"generated": 0, "forced": forced})
        b = judge_step(margins, g.judge_margin)
        return cut_before(spans, b, 0, "judge", margins[b], every), info
    raise ValueError(f"unknown locator {name!r}; use one of {LOCATORS}")
