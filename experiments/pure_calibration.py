"""PURE recalibrated on corrected labels (issue 16), from the committed GEAR-probe records.

    python experiments/pure_calibration.py shortcuts   # the teacher scores same-span constructed shortcuts (minutes; resumable)
    python experiments/pure_calibration.py analyze     # no model: docs/results/pure-calibration.json

Candidates: the PURE-scored answer-correct candidates of the probe's default repair setting
(experiments/runs/gear-probe/gear/first_third_steps-b0/scored.jsonl: GEAR repairs and answer-guided
samples) that pass the prefilters. Label: genuine = the current step checker verifies the whole
training completion (relabelled here from the stored token ids, exactly as GEAR splits steps);
fabricated = it does not. Scores are read from the records (no rescoring).

Constructed shortcuts, same span: each failed corner trajectory cut where the default setting cut
it, the reflection phrase, then the trajectory's own remaining steps with the content of its last
\\boxed{} replaced by the right answer (or, without a box, "So the final answer is \\boxed{X}."
appended). Scored like real candidates, over the steps after the reflection: the same span a
genuine repair is scored over, a derivation that leads elsewhere with the right answer pasted in.

AUROC: P(score of a fabricated candidate > score of a genuine one), ties half. Every interval is a
95% bootstrap percentile interval over problems (candidates of one problem move together); the
p-value of an AUROC difference is the two-sided bootstrap p (twice the smaller tail of the paired
difference around 0). Thresholds are chosen out of sample: 5-fold cross-validation with folds of
problems, the threshold picked on four folds (maximising genuine accepted - fabricated accepted)
and applied to the fifth; the acceptance rates pool the held-out decisions.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from heal.config import load_config
from heal.entropy import step_spans_from_pieces, token_pieces
from heal.gear import step_texts, strip_stop
from heal.pure import score_value
from heal.runs import load_stage0
from heal.stepcheck import check_steps
from heal.store import JsonlStore, atomic_write_text, read_jsonl
from heal.verify import boxed_span

# A sibling module (this script's folder is first on sys.path).
from probe_common import cut_at_breakpoint, score_shortcut, shortcut_sources, stop_ids

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "experiments" / "runs" / "gear-probe"
SETTING = PROBE / "gear" / "first_third_steps-b0"  # the probe's default setting: the PURE candidates
CONFIG = ROOT / "experiments" / "gear_probe.yaml"
OUT = ROOT / "docs" / "results" / "pure-calibration.json"
SHORTCUTS = PROBE / "shortcuts_same_span.jsonl"
EPS = 0.01
BOOT = 2000
FOLDS = 5
SEED = 0

# Every score PURE can use (heal.pure.SCORES: the stored four, rho_sum and S_rel).
SCORES = ["S", "l_max", "rho_ans", "rho_step", "rho_sum", "S_rel"]


def cfg(**over):
    return load_config(CONFIG, {"teacher.threads": 1, **over})


def tokenizer():
    from transformers import AutoTokenizer

    from heal.models import resolve

    return AutoTokenizer.from_pretrained(resolve(cfg().teacher.model).hf)


def relabel(rec: dict, prob: dict, source: dict | None, tok) -> bool:
    """derivation_ok under the current step checker, steps split as GEAR splits them: the kept
    prefix of the source trajectory (token-exact) and the continuation; guided: its own steps."""
    stop = stop_ids(tok)
    cont, _ = strip_stop(rec["continuation_ids"], None, stop)
    cp = token_pieces(tok, cont)
    steps = step_texts(cp, step_spans_from_pieces(cp))
    if rec["kind"] == "repair" and rec["cut_token"] > 0:
        traj, _ = strip_stop(source["token_ids"], None, stop)
        pieces = token_pieces(tok, traj)
        cut = rec["cut_token"]
        steps = ["".join(pieces[a:min(b, cut)]) for a, b in step_spans_from_pieces(pieces) if a < cut] + steps
    return bool(rec["correct"]) and check_steps(steps, prob["answer"], prob["question"]).ok


def value(rec: dict, name: str) -> float | None:
    return score_value(rec, name, EPS)


# ---------------------------------------------------------------------------------------------
# Constructed shortcuts over the same span (needs the teacher)


def answer_swapped(tail_text: str, answer: str) -> str:
    span = boxed_span(tail_text)
    if span is None:
        return tail_text.rstrip() + f"\n\nSo the final answer is \\boxed{{{answer}}}."
    return tail_text[: span[0]] + answer + tail_text[span[1]:]


def stage_shortcuts(limit: int = 60):
    from heal.pure import make_scorer

    c = cfg()
    refs = {r["key"].split("|", 1)[1]: r["S_ref"] for r in JsonlStore(SETTING / "reference.jsonl")}
    store = JsonlStore(SHORTCUTS)
    scorer = make_scorer(c)
    try:
        tok = scorer.tokenizer
        for key, prob, s in shortcut_sources(PROBE, c.gear, store, "/shortcut-same-span", limit):
            ids, cut = cut_at_breakpoint(tok, s, stop_ids(tok), "first_third_steps", 0)
            tail_text = answer_swapped(tok.decode(ids[cut:], skip_special_tokens=True), prob["answer"])
            sc = score_shortcut(scorer, prob, ids[:cut], c.gear.reflection, tail_text, refs.get(prob["id"]),
                                stop_ids(tok), EPS)
            store.append([{"key": key, "problem_id": prob["id"], "kind": "shortcut_same_span",
                           "cut_token": cut, "tail_text": tail_text, **sc}])
            print(key, round(sc["rho_step"] or -1, 3), len(sc["l_steps"]), "steps", flush=True)
    finally:
        scorer.close()


# ---------------------------------------------------------------------------------------------
# Analysis (records only)


def auroc(pos, neg) -> float:
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(gt / (len(pos) * len(neg)))


def groups(items: list[dict]) -> dict[str, list[dict]]:
    g = defaultdict(list)
    for it in items:
        g[it["problem_id"]].append(it)
    return g


def boot_samples(items: list[dict], rng, n=BOOT):
    """Bootstrap resamples of items, resampling problems with replacement."""
    g = groups(items)
    pids = sorted(g)
    for _ in range(n):
        pick = rng.choice(len(pids), size=len(pids), replace=True)
        yield [it for i in pick for it in g[pids[i]]]


def ci(vals) -> list[float]:
    v = np.asarray([x for x in vals if x == x], float)
    return [round(float(np.percentile(v, 2.5)), 3), round(float(np.percentile(v, 97.5)), 3)]


def auc_of(items, name) -> float:
    """AUROC of fabricated (label False) vs genuine (label True) on `items`."""
    fab = [it[name] for it in items if not it["genuine"] and it[name] is not None]
    gen = [it[name] for it in items if it["genuine"] and it[name] is not None]
    return auroc(fab, gen)


def best_threshold(items, name) -> float | None:
    """The t (reject when score > t) maximising genuine accepted - fabricated accepted; ties: the
    smallest t. Candidates are the observed values, so t never rounds past a data point."""
    gen = np.asarray([it[name] for it in items if it["genuine"] and it[name] is not None], float)
    fab = np.asarray([it[name] for it in items if not it["genuine"] and it[name] is not None], float)
    if not len(gen) or not len(fab):
        return None
    ts = np.unique(np.concatenate([gen, fab]))
    gain = [(gen <= t).mean() - (fab <= t).mean() for t in ts]
    i = int(np.argmax(gain))
    # Halfway to the next observed value: the threshold written in a config (4 decimals) keeps the
    # same decisions on these data (never rounded past a data point).
    return float(ts[i]) if i + 1 == len(ts) else float((ts[i] + ts[i + 1]) / 2)


def cv_acceptance(items, shortcuts, name, rng) -> dict:
    """Out-of-sample acceptance: folds of problems; the threshold chosen on the other folds."""
    pids = sorted({it["problem_id"] for it in items} | {s["problem_id"] for s in shortcuts})
    order = rng.permutation(len(pids))
    fold = {pids[i]: k % FOLDS for k, i in enumerate(order)}
    decided = []
    thresholds = []
    for f in range(FOLDS):
        train = [it for it in items if fold[it["problem_id"]] != f]
        t = best_threshold(train, name)
        thresholds.append(t)
        for it in items + shortcuts:
            if fold[it["problem_id"]] == f and it[name] is not None:
                decided.append({**it, "accepted": t is not None and it[name] <= t})
    return {"thresholds": thresholds, "decided": decided}


def rates(decided) -> dict:
    out = {}
    for group, sel in (("genuine", lambda d: d.get("genuine") is True),
                       ("fabricated", lambda d: d.get("genuine") is False),
                       ("constructed_same_span", lambda d: d.get("kind") == "shortcut_same_span"),
                       ("constructed_one_step", lambda d: d.get("kind") == "shortcut")):
        ds = [d for d in decided if sel(d)]
        out[group] = {"n": len(ds), "accepted": sum(d["accepted"] for d in ds),
                      "rate": round(sum(d["accepted"] for d in ds) / len(ds), 3) if ds else None}
    return out


def relabel_yields(tok, problems, samples) -> dict:
    """The GEAR probe's yields (docs/method.md, GEAR) under the current step checker: derivation-
    verified answer-correct samples before and after, per repair setting and baseline."""
    out = {}
    for d in sorted((PROBE / "gear").iterdir()):
        recs = [r for r in read_jsonl(d / "repairs.jsonl") if not r.get("duplicate")]
        out[d.name] = {"answer_correct": sum(bool(r["correct"]) for r in recs),
                       "verified_first_checker": sum(r["derivation_ok"] for r in recs),
                       "verified": sum(relabel(r, problems[r["problem_id"]], samples.get(r["source_key"]), tok)
                                       for r in recs if r["correct"]),
                       # Every corner problem for first_third_steps-b0, the first 20 for the others.
                       "problems": len({r["problem_id"] for r in recs}),
                       "teacher_tokens": sum(r["n_tokens"] for r in read_jsonl(d / "repairs.jsonl"))}
    g = list(read_jsonl(PROBE / "guided.jsonl"))
    out["guided"] = {"answer_correct": sum(bool(r["correct"]) for r in g),
                     "verified_first_checker": sum(r["derivation_ok"] for r in g),
                     "verified": sum(relabel(r, problems[r["problem_id"]], None, tok) for r in g if r["correct"])}
    out["guided"]["teacher_tokens"] = sum(r["n_tokens"] for r in g)
    plain = list(read_jsonl(PROBE / "baseline-plain" / "samples" / "samples.jsonl"))
    stop = stop_ids(tok)
    ver = 0
    for r in plain:
        if r["correct"]:
            ids, _ = strip_stop(r["token_ids"], None, stop)
            pieces = token_pieces(tok, ids)
            prob = problems[r["problem_id"]]
            ver += check_steps(step_texts(pieces, step_spans_from_pieces(pieces)), prob["answer"], prob["question"]).ok
    out["plain"] = {"answer_correct": sum(bool(r["correct"]) for r in plain), "verified": ver,
                    "teacher_tokens": sum(r["n_tokens"] for r in plain)}
    for v in out.values():
        if v.get("teacher_tokens") and v["verified"]:
            v["tokens_per_verified"] = round(v["teacher_tokens"] / v["verified"], 1)
    return out


def stage_analyze():
    tok = tokenizer()
    problems, by_problem, _ = load_stage0(PROBE)
    samples = {s["key"]: s for v in by_problem.values() for s in v}
    cands = {}
    for name in ("repairs.jsonl", "guided.jsonl"):
        for r in read_jsonl(SETTING / name):
            cands[r["key"]] = r
    scored = list(read_jsonl(SETTING / "scored.jsonl"))
    items, changed = [], []
    for r in scored:
        if r["prefilter"]:
            continue
        c = cands[r["key"]]
        new = relabel(c, problems[r["problem_id"]], samples.get(c.get("source_key")), tok)
        if new != r["derivation_ok"]:
            changed.append({"key": r["key"], "old": r["derivation_ok"], "new": new})
        it = {"key": r["key"], "problem_id": r["problem_id"], "kind": r["kind"], "genuine": new,
              "old_genuine": r["derivation_ok"], "n_steps": len(r["l_steps"])}
        it.update({s: value(r, s) for s in SCORES})
        items.append(it)
    short1 = [{"key": r["key"], "problem_id": r["problem_id"], "kind": "shortcut", "n_steps": len(r["l_steps"]),
               **{s: value(r, s) for s in SCORES}} for r in read_jsonl(PROBE / "shortcuts.jsonl")]
    short_same = [{"key": r["key"], "problem_id": r["problem_id"], "kind": "shortcut_same_span",
                   "n_steps": len(r["l_steps"]), **{s: value(r, s) for s in SCORES}}
                  for r in read_jsonl(SHORTCUTS)] if SHORTCUTS.exists() else []
    gen = [it for it in items if it["genuine"]]
    rng = np.random.default_rng(SEED)
    out: dict = {"command": "python experiments/pure_calibration.py analyze",
                 "candidates": len(items), "genuine": len(gen), "fabricated": len(items) - len(gen),
                 "problems": len({it["problem_id"] for it in items}),
                 "old_labels": {"genuine": sum(it["old_genuine"] for it in items)},
                 "relabelled": changed,
                 "steps_scored": {"genuine_median": float(np.median([it["n_steps"] for it in gen])),
                                  "fabricated_median": float(np.median([it["n_steps"] for it in items if not it["genuine"]])),
                                  "constructed_one_step_median": float(np.median([s["n_steps"] for s in short1])) if short1 else None,
                                  "constructed_same_span_median": float(np.median([s["n_steps"] for s in short_same])) if short_same else None},
                 "constructed": {"one_step": len(short1), "same_span": len(short_same)}}
    # AUROC per score, bootstrap CI over problems; both label sets, so the relabelling's effect shows.
    boots = list(boot_samples(items, rng))
    auc = {}
    for s in SCORES:
        old_items = [{**it, "genuine": it["old_genuine"]} for it in items]
        gs = [it[s] for it in gen if it[s] is not None]
        auc[s] = {
            "real": round(auc_of(items, s), 3),
            "real_ci95": ci([auc_of(b, s) for b in boots]),
            "real_old_labels": round(auc_of(old_items, s), 3),
            "constructed_one_step": round(auroc([x[s] for x in short1 if x[s] is not None], gs), 3) if short1 else None,
            "constructed_same_span": round(auroc([x[s] for x in short_same if x[s] is not None], gs), 3) if short_same else None,
        }
    best = max(SCORES, key=lambda s: auc[s]["real"])
    # Paired bootstrap differences against the best and against the old default (rho_step).
    for ref in sorted({best, "rho_step"}):
        for s in SCORES:
            if s == ref:
                continue
            d = np.asarray([auc_of(b, ref) - auc_of(b, s) for b in boots], float)
            d = d[~np.isnan(d)]
            p = min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()))
            # AUROC of `ref` minus this score's (positive: `ref` separates better).
            auc[s][f"{ref}_minus_this"] = {"diff": round(auc[ref]["real"] - auc[s]["real"], 3), "ci95": ci(d),
                                           "p_bootstrap": round(float(p), 4)}
    out["auroc"] = auc
    out["best_by_auroc"] = best
    # Out-of-sample thresholds and acceptance rates for every score; CIs by bootstrap over problems.
    shorts = short_same + short1
    thr = {}
    for s in SCORES:
        cv = cv_acceptance(items, short_same + short1, s, np.random.default_rng(SEED))
        dec = cv["decided"]
        oos = rates(dec)
        boot_rates = defaultdict(list)
        for b in boot_samples(dec, rng, n=BOOT):
            for g, r in rates(b).items():
                if r["rate"] is not None:
                    boot_rates[g].append(r["rate"])
        for g in oos:
            if oos[g]["rate"] is not None:
                oos[g]["ci95"] = ci(boot_rates[g])
        t_all = best_threshold(items, s)
        t_cfg = None if t_all is None else round(t_all, 4)
        in_sample = rates([{**x, "accepted": x[s] is not None and t_cfg is not None and x[s] <= t_cfg}
                           for x in items + shorts])
        thr[s] = {"cv_fold_thresholds": [None if t is None else round(t, 4) for t in cv["thresholds"]],
                  "out_of_sample": oos, "threshold_all_data": None if t_all is None else round(t_all, 4),
                  "threshold_all_data_unrounded": t_all,
                  "in_sample_at_threshold_all_data": in_sample}
    out["thresholds"] = thr
    # The chosen score against the old default at their out-of-sample operating points, paired over
    # problems: difference of acceptance rates (chosen - rho_step) per group.
    if best != "rho_step":
        dec = {s: {(d["key"]): d["accepted"] for d in cv_acceptance(items, short_same + short1, s,
                                                                      np.random.default_rng(SEED))["decided"]}
               for s in (best, "rho_step")}
        both = [{**it, "diff": float(dec[best][it["key"]]) - float(dec["rho_step"][it["key"]])}
                for it in items + short_same if it["key"] in dec[best] and it["key"] in dec["rho_step"]]
        paired = {}
        for group, sel in (("genuine", lambda d: d.get("genuine") is True),
                           ("fabricated", lambda d: d.get("genuine") is False),
                           ("constructed_same_span", lambda d: d.get("kind") == "shortcut_same_span")):
            ds = [d for d in both if sel(d)]
            bs = [np.mean([d["diff"] for d in b if sel(d)]) for b in boot_samples(ds, rng)]
            paired[group] = {"diff": round(float(np.mean([d["diff"] for d in ds])), 3), "ci95": ci(bs),
                             "p_bootstrap": round(float(min(1.0, 2 * min(np.mean(np.asarray(bs) <= 0),
                                                                          np.mean(np.asarray(bs) >= 0)))), 4)}
        out[f"out_of_sample_{best}_minus_rho_step"] = paired
    out["repair_yield_relabelled"] = relabel_yields(tok, problems, samples)
    atomic_write_text(OUT, json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("candidates", "genuine", "fabricated", "best_by_auroc", "auroc")}, indent=1))
    for s in SCORES:
        print(s, thr[s]["threshold_all_data"], {g: (r["rate"], r.get("ci95")) for g, r in thr[s]["out_of_sample"].items()})


STAGES = {"shortcuts": stage_shortcuts, "analyze": stage_analyze}

if __name__ == "__main__":
    os.chdir(ROOT)
    for name in sys.argv[1:] or ["analyze"]:
        STAGES[name]()
