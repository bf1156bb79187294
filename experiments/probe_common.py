"""What the experiments built on the GEAR probe share (a module, not a script).

The experiment scripts import it as a sibling (`from probe_common import ...`): Python puts a
script's own folder first on sys.path, so `python experiments/<script>.py` finds it with no path
edits. Only heal's public API is used.

- the probe's problem sets: TASKS and write_problem_file (the probe's 120 problems, the PACE
  held-out set);
- link_stage0: a run directory that reuses another run's Stage 0 sees it through relative
  symlinks (committed as links: the run data is stored once);
- the constructed shortcuts of gear_probe.py (`filter`) and pure_calibration.py (`shortcuts`): the
  same failed corner trajectories cut at the same breakpoint, the reflection, a tail that pastes in
  the right answer, scored like a real candidate.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

from heal.entropy import find_breakpoint, step_spans_from_pieces, token_pieces
from heal.gear import select_failed, strip_stop
from heal.pace import end_of_turn
from heal.problems import load_problems
from heal.pure import score_candidate
from heal.runs import load_stage0
from heal.store import atomic_write_jsonl

TASKS = [("chain_sum", {"min_terms": 4, "max_terms": 5, "min_digits": 3, "max_digits": 4}),
         # Parentheses stay allowed: without them reasoning-gym 0.1.25 computes left to right and its
         # answers contradict operator precedence (the loader skips those).
         ("basic_arithmetic", {"min_terms": 3, "max_terms": 4, "min_digits": 2, "max_digits": 3,
                               "operators": ["+", "-", "*"]})]

# The files of Stage 0 that later stages only read (a run that reuses a Stage 0 links these).
STAGE0_FILES = ("problems.jsonl", "samples.jsonl", "tiers.jsonl", "sample_summary.json")


def write_problem_file(path: Path, size: int, seed: int, shuffle_seed: int) -> Path:
    """`size` chain_sum + `size` basic_arithmetic problems (the method doc's sizes), shuffled, written once."""
    if not path.exists():
        rows = []
        for task, params in TASKS:
            skipped: list[str] = []
            rows += [p.to_dict() for p in load_problems(f"reasoning_gym:{task}", size=size, seed=seed, params=params,
                                                         skipped=skipped)]
            assert not skipped, skipped
        random.Random(shuffle_seed).shuffle(rows)
        atomic_write_jsonl(path, rows)
    return path


def link_stage0(src: Path, dst: Path) -> None:
    """`dst` sees the Stage 0 of run `src` through relative symlinks (read only: later stages append
    to their own files, never to these). A file `dst` already has is left alone."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in STAGE0_FILES:
        if not os.path.lexists(dst / name):
            os.symlink(os.path.relpath(src / name, dst), dst / name)


def stop_ids(tok) -> set[int]:
    """The teacher's (Qwen2.5's) end-of-turn and end-of-text tokens."""
    return {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id}


def failed_corner_trajectories(run: Path, gear) -> Iterator[tuple[dict, dict]]:
    """(problem, failed sample) for every corner problem of `run`'s Stage 0, in Stage 0 order, the
    trajectories GEAR would repair (`gear`: a GearConfig: max_trajectories, skip_truncated)."""
    problems, by_problem, tiers = load_stage0(run)
    for pid, t in tiers.items():
        if t["tier"] != "corner":
            continue
        for s in select_failed(by_problem[pid], gear.max_trajectories, gear.skip_truncated):
            yield problems[pid], s


def shortcut_sources(run: Path, gear, done, suffix: str, limit: int) -> Iterator[tuple[str, dict, dict]]:
    """(key, problem, sample) of the first `limit` failed corner trajectories whose shortcut
    (key: the sample's key + `suffix`) is not yet in `done` (a store: a rerun resumes)."""
    for made, (prob, s) in enumerate(failed_corner_trajectories(run, gear)):
        if made >= limit:
            return
        key = s["key"] + suffix
        if key not in done:
            yield key, prob, s


def cut_at_breakpoint(tok, sample: dict, stop: set[int], window: str, backup: int) -> tuple[list[int], int]:
    """The trajectory's token ids (stop token stripped) and where GEAR cuts it in `window` / `backup`."""
    ids, ent = strip_stop(sample["token_ids"], sample["entropy"], stop)
    pieces = token_pieces(tok, ids)
    return ids, find_breakpoint(ent, step_spans_from_pieces(pieces), window, backup, pieces).cut_token


def score_shortcut(scorer, prob: dict, prefix: list[int], reflection: str, tail_text: str, s_ref, stop: set[int],
                   eps: float) -> dict:
    """PURE's scores of `prefix` + the reflection + `tail_text` + end of turn, scored as a real
    candidate is: over what follows the reflection."""
    tok = scorer.tokenizer
    refl = tok(reflection, add_special_tokens=False)["input_ids"]
    tail = tok(tail_text, add_special_tokens=False)["input_ids"]
    train = prefix + refl + tail + [end_of_turn(tok)]
    return score_candidate(scorer, prob["prompt_ids"], train, len(prefix) + len(refl), prob["answer"], s_ref, stop, eps)
