"""GEAR / PURE measured on the real teacher (issue 3). Resumable: every step appends to run stores.

    python experiments/gear_probe.py all    # or: sample | breakpoints | repair-default | baselines | filter | repair | report

Stages (each reads what the previous wrote; re-running skips what is done):
  sample       Stage 0 on checkable problems (chain_sum + basic_arithmetic), K samples each.
  breakpoints  No generation: for every failed trajectory of a corner problem, where each window
               mode x back-up puts the breakpoint and the cut, against the step checker's first
               false step and against a random cut.
  repair       GEAR for each setting in REPAIR_SETTINGS (own run directory per setting).
  baselines    Plain rejection sampling with extra samples (no hint) and answer-guided restarts,
               on the same corner problems: verified solutions per teacher token.
  filter       PURE over the default setting's repairs + guided samples, plus constructed shortcuts.
  report       docs/results/gear-probe.json with every number.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from heal.config import load_config
from heal.entropy import find_breakpoint, step_spans_from_pieces, token_pieces
from heal.gear import run_repair, step_texts, strip_stop, summarize_repairs
from heal.guided import run_guided
from heal.pure import reference_nll, run_filter
from heal.runs import load_stage0
from heal.stage0 import run_sample
from heal.stepcheck import check_steps
from heal.store import JsonlStore, atomic_write_jsonl, atomic_write_text, read_jsonl

# A sibling module (this script's folder is first on sys.path).
from probe_common import (cut_at_breakpoint, failed_corner_trajectories, link_stage0, score_shortcut, shortcut_sources,
                          stop_ids, write_problem_file)

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "experiments" / "gear_probe.yaml"
SETTINGS = [("first_third_tokens", 1), ("first_third_tokens", 0), ("first_third_steps", 1),
            ("first_third_steps", 0), ("all", 1), ("all", 0)]
# Generation is the cost: the repair yield is measured for three settings (the paper's, and the two
# that keep the most prefix); the breakpoint analysis covers all six without generating.
# The paper's setting, and first_third_tokens / back-up 0, which the breakpoint analysis found to cut
# before the first false step most often while still keeping a step (docs/results/gear-probe.json).
REPAIR_SETTINGS = [("first_third_steps", 0), ("first_third_tokens", 1), ("first_third_tokens", 0)]
DEFAULT_SETTING = ("first_third_steps", 0)
# 2 CPU cores: the default setting repairs every corner problem; the other two the first
# COMPARE_PROBLEMS of them (the same ones), which is what the per-setting comparison uses.
COMPARE_PROBLEMS = 20
EXTRA_PLAIN = 2  # extra unhinted samples per corner problem for the plain-RS baseline (= guided.samples)


def cfg(**over):
    return load_config(CONFIG, over)


def base_dir() -> Path:
    return ROOT / cfg().output_dir


def problems_file() -> Path:
    """The probe's problem set: 60 + 60, seed 2026."""
    return write_problem_file(ROOT / "experiments" / "data" / "gear_probe_problems.jsonl", 60, 2026, 0)


def stage_sample():
    problems_file()
    run_sample(cfg(), progress=True)


def stage_breakpoints():
    """Where each setting cuts, measured against the step checker's first false step."""
    from transformers import AutoTokenizer

    from heal.models import resolve

    run = base_dir()
    tok = AutoTokenizer.from_pretrained(resolve(cfg().teacher.model).hf)
    rng = random.Random(0)
    rows = []
    for prob, s in failed_corner_trajectories(run, cfg().gear):
        stop = stop_ids(tok)
        ids, ent = strip_stop(s["token_ids"], s["entropy"], stop)
        pieces = token_pieces(tok, ids)
        spans = step_spans_from_pieces(pieces)
        check = check_steps(step_texts(pieces, spans), prob["answer"], prob["question"])
        row = {"key": s["key"], "n_steps": len(spans), "n_tokens": len(ids), "first_false": check.first_false_step,
               "reason": check.reason}
        ff = check.first_false_step
        for window, backup in SETTINGS:
            bp = find_breakpoint(ent, spans, window, backup, pieces)
            cands = bp.candidates
            row[f"{window}/b{backup}"] = {
                "step": bp.step, "kept": bp.kept_steps, "restart": bp.restart,
                # The chance baseline of the same window: a uniformly random candidate step.
                "random_within_one": (sum(abs(c - ff) <= 1 for c in cands) / len(cands)) if cands and ff is not None else None,
                "random_cut_before_false": (sum(max(0, c - backup) <= ff for c in cands) / len(cands)) if cands and ff is not None else None,
            }
        row["random_step"] = rng.randrange(1, len(spans)) if len(spans) > 1 else -1
        rows.append(row)
    atomic_write_jsonl(run / "breakpoints.jsonl", rows)
    print(f"breakpoints: {len(rows)} failed corner trajectories")


def compare_problems() -> list[str]:
    """The corner problems every repair setting is run on (Stage 0 order, first COMPARE_PROBLEMS)."""
    _, _, tiers = load_stage0(base_dir())
    return [pid for pid, t in tiers.items() if t["tier"] == "corner"][:COMPARE_PROBLEMS]


def setting_dir(window: str, backup: int) -> Path:
    return base_dir() / "gear" / f"{window}-b{backup}"


def stage_repair(settings=None):
    from heal.engines import make_engine

    engine = make_engine(cfg().teacher)
    try:
        for window, backup in settings or REPAIR_SETTINGS:
            d = setting_dir(window, backup)
            link_stage0(base_dir(), d)  # each setting's run directory sees the one Stage 0
            c = cfg(**{"output_dir": str(d), "gear.window": window, "gear.backup": backup})
            t0 = time.time()
            only = None if (window, backup) == DEFAULT_SETTING else compare_problems()
            print(f"== GEAR {window} back-up {backup}", flush=True)
            print(run_repair(c, engine=engine, progress=True, problem_ids=only), f"{time.time() - t0:.0f}s", flush=True)
    finally:
        engine.close()


def stage_baselines():
    """Plain RS with extra unhinted samples, and answer-guided restarts, on the corner problems."""
    run = base_dir()
    _, _, tiers = load_stage0(run)
    corner = [pid for pid, t in tiers.items() if t["tier"] == "corner"]
    # Plain RS: K extra samples of each corner problem, in their own run (seeds continue after K).
    d = run / "baseline-plain"
    d.mkdir(parents=True, exist_ok=True)
    src = [json.loads(l) for l in open(run / "problems.jsonl")]
    extra = d / "corner_problems.jsonl"
    if not extra.exists():
        atomic_write_jsonl(extra, [{k: p[k] for k in ("id", "question", "answer", "source", "meta")}
                                   for p in src if p["id"] in corner])
    c = cfg(**{"output_dir": str(d / "samples"), "data.source": str(extra), "data.size": None,
               "sample.k": EXTRA_PLAIN, "sampling.seed": 777})
    run_sample(c, progress=True)
    # Answer-guided restarts (STaR-style) on the same corner problems.
    g = cfg(**{"output_dir": str(run), "guided.tiers": ["corner"]})
    print(run_guided(g, progress=True))


def constructed_shortcuts(run: Path, scorer, limit: int = 60) -> list[dict]:
    """Broken prefix (the failed trajectory cut at its default breakpoint) followed straight by the
    boxed answer: a repair that only copies the hint. Scored exactly like real candidates."""
    c = cfg()
    _, by_problem, _ = load_stage0(run)
    out_store = JsonlStore(run / "shortcuts.jsonl")
    stop = set(scorer.eos)
    # reference.jsonl is keyed "<scorer>|<problem id>" (one scorer per run directory).
    refs = {r["key"].split("|", 1)[1]: r["S_ref"] for r in JsonlStore(setting_dir(*DEFAULT_SETTING) / "reference.jsonl")}
    for key, prob, s in shortcut_sources(run, c.gear, out_store, "/shortcut", limit):
        ids, cut = cut_at_breakpoint(scorer.tokenizer, s, stop, *DEFAULT_SETTING)
        pid = prob["id"]
        if pid not in refs:
            refs[pid] = reference_nll(scorer, prob["prompt_ids"], [x["token_ids"] for x in by_problem[pid]], stop)
        sc = score_shortcut(scorer, prob, ids[:cut], c.gear.reflection, f"So the final answer is \\boxed{{{prob['answer']}}}.",
                            refs[pid], stop, c.pure.eps)
        out_store.append([{"key": key, "problem_id": pid, "kind": "shortcut", **sc}])
    return list(out_store)


def stage_filter():
    from heal.pure import make_scorer

    d = setting_dir(*DEFAULT_SETTING)
    # Guided samples live in the base run; PURE scores them next to the default setting's repairs
    # (linked: PURE only reads them).
    if (base_dir() / "guided.jsonl").exists() and not os.path.lexists(d / "guided.jsonl"):
        os.symlink(os.path.relpath(base_dir() / "guided.jsonl", d), d / "guided.jsonl")
    c = cfg(**{"output_dir": str(d)})
    scorer = make_scorer(c)
    try:
        print(run_filter(c, scorer=scorer, progress=True))
        constructed_shortcuts(base_dir(), scorer)
    finally:
        scorer.close()


def auroc(pos: list[float], neg: list[float]) -> float | None:
    """P(score of a shortcut > score of a genuine candidate): higher score = more suspicious."""
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def stage_report():
    run = base_dir()
    out: dict = {"config": str(CONFIG.relative_to(ROOT)), "teacher": cfg().teacher.model}
    summary = json.loads((run / "sample_summary.json").read_text())
    out["stage0"] = summary
    # Breakpoints.
    bps = list(read_jsonl(run / "breakpoints.jsonl")) if (run / "breakpoints.jsonl").exists() else []
    with_false = [r for r in bps if r["first_false"] is not None]
    bp_table = {}
    for window, backup in SETTINGS:
        k = f"{window}/b{backup}"
        def mean(xs):
            xs = [x for x in xs if x is not None]
            return round(float(np.mean(xs)), 3) if xs else None

        bp_table[k] = {
            "trajectories": len(bps),
            "restart_share": mean([r[k]["restart"] for r in bps]),
            "mean_steps_kept": mean([r[k]["kept"] for r in bps]),
            "within_one_of_first_false": mean([abs(r[k]["step"] - r["first_false"]) <= 1 for r in with_false]),
            "random_in_window_within_one": mean([r[k].get("random_within_one") for r in with_false]),
            # A prefix that keeps the first false step hands the error to every continuation.
            "cut_before_first_false": mean([r[k]["kept"] <= r["first_false"] for r in with_false]),
            "random_in_window_cut_before_first_false": mean([r[k].get("random_cut_before_false") for r in with_false]),
            "keeps_a_step_and_cuts_before_false": mean([0 < r[k]["kept"] <= r["first_false"] for r in with_false]),
        }
    out["breakpoints"] = {"with_false_step": len(with_false), "settings": bp_table,
                          "random_within_one": round(np.mean([abs(r["random_step"] - r["first_false"]) <= 1 for r in with_false]), 3) if with_false else None}
    # Repairs per setting.
    def with_rates(s):
        s["tokens_per_verified"] = round(s["teacher_tokens"] / s["derivation_verified"], 1) if s["derivation_verified"] else None
        s["tokens_per_answer_correct"] = round(s["teacher_tokens"] / s["answer_correct"], 1) if s["answer_correct"] else None
        return s

    rep = {}
    for window, backup in SETTINGS:
        d = setting_dir(window, backup)
        if (d / "repairs.jsonl").exists():
            rep[f"{window}/b{backup}"] = with_rates(summarize_repairs(d, compare_problems()))
    out["repairs_compared_on"] = f"the first {COMPARE_PROBLEMS} corner problems (every setting ran on these)"
    out["repairs"] = rep
    if (setting_dir(*DEFAULT_SETTING) / "repairs.jsonl").exists():
        out["repairs_default_all_corner"] = with_rates(summarize_repairs(setting_dir(*DEFAULT_SETTING)))
    # Baselines.
    plain_dir = run / "baseline-plain" / "samples"
    if (plain_dir / "samples.jsonl").exists():
        recs = list(read_jsonl(plain_dir / "samples.jsonl"))
        probs = {p["id"]: p for p in read_jsonl(plain_dir / "problems.jsonl")}
        ver = 0
        for r in recs:
            if r["correct"]:
                ver += check_steps([r["text"]], probs[r["problem_id"]]["answer"], probs[r["problem_id"]]["question"]).ok
        toks = sum(r["n_tokens"] for r in recs)
        out["baseline_plain"] = {"samples": len(recs), "answer_correct": sum(bool(r["correct"]) for r in recs),
                                 "derivation_verified": ver, "teacher_tokens": toks,
                                 "tokens_per_verified": round(toks / ver, 1) if ver else None}
    if (run / "guided.jsonl").exists():
        g = list(read_jsonl(run / "guided.jsonl"))
        ver, toks = sum(r["derivation_ok"] for r in g), sum(r["n_tokens"] for r in g)
        out["baseline_guided"] = {"samples": len(g), "answer_correct": sum(bool(r["correct"]) for r in g),
                                  "derivation_verified": ver, "teacher_tokens": toks,
                                  "tokens_per_verified": round(toks / ver, 1) if ver else None}
    # PURE.
    d = setting_dir(*DEFAULT_SETTING)
    if (d / "scored.jsonl").exists():
        scored = [r for r in read_jsonl(d / "scored.jsonl") if not r["prefilter"]]
        shortcuts = list(read_jsonl(run / "shortcuts.jsonl")) if (run / "shortcuts.jsonl").exists() else []
        genuine = [r for r in scored if r["derivation_ok"]]
        fake = [r for r in scored if not r["derivation_ok"]]
        pure = {"candidates": len(scored), "genuine": len(genuine), "unverified": len(fake),
                "constructed_shortcuts": len(shortcuts),
                "prefiltered": sum(1 for r in read_jsonl(d / "scored.jsonl") if r["prefilter"])}
        for name, f in [("rho_ans", lambda r: r["rho_ans"]), ("rho_step", lambda r: r["rho_step"]),
                        ("rho_sum", lambda r: (r["rho_ans"] or 0) + r["rho_step"]), ("S", lambda r: r["S"]),
                        ("l_max", lambda r: r["l_max"])]:
            gv = [f(r) for r in genuine if f(r) is not None]
            pure[f"auroc_{name}_real"] = auroc([f(r) for r in fake if f(r) is not None], gv)
            pure[f"auroc_{name}_constructed"] = auroc([f(r) for r in shortcuts if f(r) is not None], gv)
        # Threshold calibration (reject when score > t): the t that maximises (genuine accepted) -
        # (unverified accepted) on the real repairs, and the accept rates of every group at it.
        for name in ("rho_step", "rho_ans"):
            g = [r[name] for r in genuine if r[name] is not None]
            f_ = [r[name] for r in fake if r[name] is not None]
            c_ = [r[name] for r in shortcuts if r[name] is not None]
            if not g or not f_:
                continue
            best = max(sorted(set(g + f_)), key=lambda t: (np.mean([x <= t for x in g]) - np.mean([x <= t for x in f_]), -t))
            pure[f"threshold_{name}"] = {
                "t": round(best, 4),
                "accept_genuine": round(float(np.mean([x <= best for x in g])), 3),
                "accept_unverified": round(float(np.mean([x <= best for x in f_])), 3),
                "accept_constructed": round(float(np.mean([x <= best for x in c_])), 3) if c_ else None,
                "median_genuine": round(float(np.median(g)), 4), "median_unverified": round(float(np.median(f_)), 4),
                "median_constructed": round(float(np.median(c_)), 4) if c_ else None,
            }
        out["pure"] = pure
    atomic_write_text(ROOT / "docs" / "results" / "gear-probe.json", json.dumps(out, indent=2, default=float) + "\n")
    print(json.dumps(out, indent=2, default=float))


STAGES = {"sample": stage_sample, "breakpoints": stage_breakpoints,
          "repair-default": lambda: stage_repair([DEFAULT_SETTING]),
          "baselines": stage_baselines, "filter": stage_filter,
          "repair": stage_repair,  # the other settings, on the first COMPARE_PROBLEMS corner problems
          "report": stage_report}

if __name__ == "__main__":
    os.chdir(ROOT)  # config paths are relative to the repository root
    which = sys.argv[1:] or ["all"]
    for name in (list(STAGES) if which == ["all"] else which):
        STAGES[name]()
