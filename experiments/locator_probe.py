"""Breakpoint locators measured on the real teacher (issue 16). Resumable: every source trajectory's
repairs are appended to its locator's run store, and a rerun skips what is there.

    python experiments/locator_probe.py run       # generate (hours on 1 CPU thread); resumes
    python experiments/locator_probe.py report    # docs/results/locator-probe.{json,md,png} from the records there are

The GEAR probe's Stage 0 (experiments/runs/gear-probe, linked read-only) and its corner problems, in
Stage 0 order. Problem by problem, every locator of LOCATORS repairs the same M = 2 failed
trajectories with N = 2 continuations and the same seeds (a continuation's seed depends on its
source trajectory only), so a partial run compares the locators on the same problems. Baselines on
the same problems come from the GEAR probe: answer-guided restarts (guided.jsonl) and plain
rejection sampling (baseline-plain), with the current step checker.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from heal.config import load_config
from heal.entropy import step_spans_from_pieces, token_pieces
from heal.evaluation import holm
from heal.gear import run_repair, select_failed, step_texts, strip_stop
from heal.runs import load_stage0
from heal.stepcheck import check_steps
from heal.store import JsonlStore, atomic_write_text, read_jsonl

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "experiments" / "locator_probe.yaml"
STAGE0 = ROOT / "experiments" / "runs" / "gear-probe"
LOCATORS = ["entropy", "random", "first_error", "judge", "rollout"]
BOOT = 2000  # bootstrap resamples of problems
ROLLOUT_EVERY = 3


def cfg(**over):
    return load_config(CONFIG, over)


def run_dir(locator: str) -> Path:
    return ROOT / cfg().output_dir / locator


def corner_problems() -> list[str]:
    _, _, tiers = load_stage0(STAGE0)
    return [pid for pid, t in tiers.items() if t["tier"] == "corner"]


def link_stage0(dst: Path):
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("problems.jsonl", "samples.jsonl", "tiers.jsonl", "sample_summary.json"):
        if not (dst / name).exists():
            os.symlink(os.path.relpath(STAGE0 / name, dst), dst / name)


def stage_run():
    from heal.engines import make_engine

    engine = make_engine(cfg().teacher)
    pids = corner_problems()
    # Rollout costs about 4x the other locators' teacher tokens (a dozen minutes a problem on one
    # thread): it runs on every ROLLOUT_EVERY-th problem as the run goes, and on the rest after all
    # problems have the other four, so a partial run compares the four on many problems, rollout on fewer.
    cheap = [loc for loc in LOCATORS if loc != "rollout"]
    order = [(pid, loc) for i, pid in enumerate(pids)
             for loc in cheap + (["rollout"] if i % ROLLOUT_EVERY == 0 else [])]
    order += [(pid, "rollout") for i, pid in enumerate(pids) if i % ROLLOUT_EVERY]
    try:
        for pid, loc in order:
            d = run_dir(loc)
            link_stage0(d)
            t0 = time.time()
            s = run_repair(cfg(**{"output_dir": str(d), "gear.locator": loc}), engine=engine, progress=False,
                           problem_ids=[pid], log=lambda *a: None)
            print(f"{time.strftime('%H:%M:%S')} problem {pids.index(pid) + 1} {pid} {loc}: {time.time() - t0:.0f}s, "
                  f"{s['continuations']} continuations so far", flush=True)
    finally:
        engine.close()


# ---------------------------------------------------------------------------------------------
# Report


def source_first_false(tok, problems, samples_by_key) -> dict[str, int | None]:
    """The step checker's first false step of every source trajectory (None: none found)."""
    out = {}
    for key, s in samples_by_key.items():
        prob = problems[s["problem_id"]]
        ids, _ = strip_stop(s["token_ids"], None, {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id})
        pieces = token_pieces(tok, ids)
        out[key] = check_steps(step_texts(pieces, step_spans_from_pieces(pieces)), prob["answer"],
                               prob["question"]).first_false_step
    return out


def judge_step_auroc(tok, recs: list[dict], samples_by_key: dict) -> dict:
    """Does the teacher's verdict margin single out false steps? AUROC of margin_k for steps holding
    a false equation (the step checker's, each step alone) against steps whose equations all hold."""
    from heal.stepcheck import equations

    stop = {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id}
    per_source: list[tuple[list[float], list[float]]] = []
    seen = set()
    for r in recs:
        if r["source_key"] in seen or not r.get("locator_info", {}).get("scores"):
            continue
        seen.add(r["source_key"])
        ids, _ = strip_stop(samples_by_key[r["source_key"]]["token_ids"], None, stop)
        pieces = token_pieces(tok, ids)
        f_, t_ = [], []
        for text, m in zip(step_texts(pieces, step_spans_from_pieces(pieces)), r["locator_info"]["scores"]):
            eqs = equations(text)
            if eqs:
                (t_ if all(e.ok for e in eqs) else f_).append(m)
        per_source.append((f_, t_))

    def auc(src):
        fm = [m for f_, _ in src for m in f_]
        tm = [m for _, t_ in src for m in t_]
        if not fm or not tm:
            return float("nan")
        return sum((f > t) + 0.5 * (f == t) for f in fm for t in tm) / (len(fm) * len(tm))

    rng = np.random.default_rng(0)
    boots = np.asarray([auc([per_source[i] for i in rng.integers(len(per_source), size=len(per_source))])
                        for _ in range(BOOT)]) if per_source else np.asarray([])
    boots = boots[~np.isnan(boots)]
    point = auc(per_source) if per_source else float("nan")
    return {"false_steps": sum(len(f_) for f_, _ in per_source), "true_steps": sum(len(t_) for _, t_ in per_source),
            "sources": len(per_source), "auroc": None if point != point else round(point, 3),
            # bootstrap over source trajectories (steps of one trajectory move together)
            "auroc_ci95": [round(float(np.percentile(boots, q)), 3) for q in (2.5, 97.5)] if len(boots) else None}


def per_problem(recs: list[dict], first_false: dict) -> dict[str, dict]:
    """Per problem: continuations, answer-correct, verified, teacher tokens (continuations, locator),
    and per source whether the cut keeps only steps the checker accepts."""
    out: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    seen_src = set()
    for r in recs:
        p = out[r["problem_id"]]
        p["tokens"] += r["n_tokens"]  # duplicates included: they were paid for
        if not r.get("duplicate"):
            p["continuations"] += 1
            p["correct"] += bool(r["correct"])
            p["verified"] += bool(r["derivation_ok"])
        if r["source_key"] not in seen_src:
            seen_src.add(r["source_key"])
            cost = r.get("locator_info", {}).get("cost", {"generated": 0, "forced": 0})
            p["loc_generated"] += cost["generated"]
            p["loc_forced"] += cost["forced"]
            p["sources"] += 1
            p["restarts"] += bool(r["restart"])
            p["kept_steps"] += r["breakpoint"]["kept_steps"]
            ff = first_false.get(r["source_key"])
            if ff is not None:
                p["checkable"] += 1
                p["clean_cut"] += r["breakpoint"]["kept_steps"] <= ff  # the prefix holds no false step
                p["clean_cut_keeping"] += 0 < r["breakpoint"]["kept_steps"] <= ff
    return out


def baseline_per_problem(recs: list[dict], problems: dict) -> dict[str, dict]:
    out: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    for r in recs:
        p = out[r["problem_id"]]
        prob = problems[r["problem_id"]]
        p["tokens"] += r["n_tokens"]
        p["continuations"] += 1
        p["correct"] += bool(r["correct"])
        text = r.get("training_text") or r["text"]
        p["verified"] += bool(r["correct"]) and check_steps([text], prob["answer"], prob["question"]).ok
    return out


def totals(rows: dict[str, dict], pids: list[str]) -> dict:
    keys = ("continuations", "correct", "verified", "tokens", "loc_generated", "loc_forced", "sources", "restarts",
            "kept_steps", "checkable", "clean_cut", "clean_cut_keeping")
    t = {k: float(sum(rows.get(p, {}).get(k, 0) for p in pids)) for k in keys}
    t["all_tokens"] = t["tokens"] + t["loc_generated"] + t["loc_forced"]
    t["problems_correct"] = sum(rows.get(p, {}).get("correct", 0) > 0 for p in pids)
    t["problems_verified"] = sum(rows.get(p, {}).get("verified", 0) > 0 for p in pids)
    return t


def per_kilotoken(rows, pids, key="verified", tokens="all_tokens") -> float:
    t = totals(rows, pids)
    return 1000 * t[key] / t[tokens] if t[tokens] else float("nan")


def boot_ci(fn, pids, rng) -> list[float]:
    """95% percentile interval of fn(resampled problems), problems resampled with replacement."""
    vals = np.asarray([fn(list(rng.choice(pids, size=len(pids), replace=True))) for _ in range(BOOT)], float)
    vals = vals[~np.isnan(vals)]
    if not len(vals):
        return [None, None]
    return [round(float(np.percentile(vals, 2.5)), 3), round(float(np.percentile(vals, 97.5)), 3)]


def table_for(names: list[str], pids: list[str], rows: dict, rng) -> dict:
    """Totals, rates and bootstrap intervals of `names` over the problems `pids`; the ratio of each
    one's verified repairs per token to the entropy locator's, paired over the same problems."""
    table = {}
    for name in names:
        r = rows[name]
        t = totals(r, pids)
        entry = {k: (int(v) if float(v).is_integer() else round(v, 3)) for k, v in t.items()}
        entry["verified_per_1k_tokens"] = round(per_kilotoken(r, pids), 3) if pids else None
        entry["verified_per_1k_tokens_ci95"] = boot_ci(lambda ps: per_kilotoken(r, ps), pids, rng) if pids else None
        entry["answer_correct_per_1k_tokens"] = round(per_kilotoken(r, pids, "correct"), 3) if pids else None
        entry["tokens_per_verified"] = round(t["all_tokens"] / t["verified"], 1) if t["verified"] else None
        if name in LOCATORS:
            entry["clean_cut_share"] = round(t["clean_cut"] / t["checkable"], 3) if t["checkable"] else None
            entry["restart_share"] = round(t["restarts"] / t["sources"], 3) if t["sources"] else None
            entry["mean_steps_kept"] = round(t["kept_steps"] / t["sources"], 3) if t["sources"] else None
        if name != "entropy" and pids:
            def ratio(ps, r=r):
                base = per_kilotoken(rows["entropy"], ps)
                return per_kilotoken(r, ps) / base if base else float("nan")
            def diff(ps, r=r):
                return per_kilotoken(r, ps) - per_kilotoken(rows["entropy"], ps)
            # The ratio (the target: 2x) is undefined while entropy has no verified repair;
            # the difference always is. Bootstrap intervals of both, and the difference's p-value.
            entry["ratio_to_entropy"] = None if ratio(pids) != ratio(pids) else round(ratio(pids), 3)
            entry["ratio_to_entropy_ci95"] = boot_ci(ratio, pids, rng)
            entry["diff_vs_entropy_per_1k"] = round(diff(pids), 3)
            ds = np.asarray([diff(list(rng.choice(pids, size=len(pids), replace=True))) for _ in range(BOOT)], float)
            ds = ds[~np.isnan(ds)]
            entry["diff_vs_entropy_ci95"] = [round(float(np.percentile(ds, 2.5)), 3), round(float(np.percentile(ds, 97.5)), 3)] if len(ds) else [None, None]
            entry["diff_vs_entropy_p_bootstrap"] = round(float(min(1.0, 2 * min((ds <= 0).mean(), (ds >= 0).mean()))), 4) if len(ds) else None
        table[name] = entry
    return table


def stage_report():
    from transformers import AutoTokenizer

    from heal.models import resolve

    problems, by_problem, _ = load_stage0(STAGE0)
    samples_by_key = {s["key"]: s for v in by_problem.values() for s in v}
    recs = {loc: list(read_jsonl(run_dir(loc) / "repairs.jsonl")) if (run_dir(loc) / "repairs.jsonl").exists() else []
            for loc in LOCATORS}
    # Paired comparisons: only problems finished (all M sources written) by every locator compared.
    m = cfg().gear.max_trajectories
    done = {loc: {pid for pid in {r["problem_id"] for r in rs}
                  if len({r["source_key"] for r in rs if r["problem_id"] == pid}) >= min(m, _n_failed(by_problem[pid], m))}
            for loc, rs in recs.items()}
    cheap = [loc for loc in LOCATORS if loc != "rollout"]
    main_pids = [p for p in corner_problems() if all(p in done[loc] for loc in cheap)]
    roll_pids = [p for p in corner_problems() if p in done["rollout"] and p in done["entropy"]]
    # Once rollout has every problem the others have, all five share one table; before, rollout gets
    # its own table against entropy on the problems it finished.
    main_locs = cheap + (["rollout"] if set(main_pids) <= done["rollout"] else [])
    tok = AutoTokenizer.from_pretrained(resolve(cfg().teacher.model).hf)
    used = {r["source_key"] for rs in recs.values() for r in rs}
    first_false = source_first_false(tok, problems, {k: samples_by_key[k] for k in used})
    rows = {loc: per_problem(rs, first_false) for loc, rs in recs.items()}
    corner = set(corner_problems())
    guided = [r for r in read_jsonl(STAGE0 / "guided.jsonl") if r["problem_id"] in corner]
    plain = [r for r in read_jsonl(STAGE0 / "baseline-plain" / "samples" / "samples.jsonl") if r["problem_id"] in corner]
    rows["guided restarts"] = baseline_per_problem(guided, problems)
    rows["plain sampling"] = baseline_per_problem(plain, problems)
    rng = np.random.default_rng(0)
    out = {"config": str(CONFIG.relative_to(ROOT)), "command": "python experiments/locator_probe.py report",
           "corner_problems": len(corner), "problems_done_per_locator": {loc: len(done[loc]) for loc in LOCATORS},
           "partial": any(len(done[loc]) < len(corner) for loc in LOCATORS),
           "tokens_note": "all_tokens = continuation tokens + the locator's generated and teacher-forced tokens; "
                          "baselines (from the GEAR probe, same problems): their samples' tokens",
           "tables": {
               "main": {"locators": main_locs, "problems": len(main_pids),
                        "rows": table_for(main_locs + ["guided restarts", "plain sampling"], main_pids, rows, rng)}},
           "judge_margin_auroc_false_steps": judge_step_auroc(tok, recs["judge"], samples_by_key)}
    # Holm over the locators' comparisons with entropy (the baselines are description, not tests)
    compared = [loc for loc in main_locs if loc != "entropy"]
    rows_main = out["tables"]["main"]["rows"]
    # (a bootstrap p of 0 means < 1 / BOOT: adjusted as 1 / BOOT, an upper bound)
    for loc, adj in zip(compared, holm([max(rows_main[loc]["diff_vs_entropy_p_bootstrap"], 1 / BOOT) for loc in compared])):
        rows_main[loc]["diff_vs_entropy_p_holm"] = round(adj, 4)
    if "rollout" not in main_locs:
        out["tables"]["rollout"] = {"locators": ["entropy", "rollout"], "problems": len(roll_pids),
                                    "rows": table_for(["entropy", "rollout"], roll_pids, rows, rng)}
    res = ROOT / "docs" / "results"
    atomic_write_text(res / "locator-probe.json", json.dumps(out, indent=2) + "\n")
    atomic_write_text(res / "locator-probe.md", markdown(out))
    plot(out, res / "locator-probe.png")
    print(markdown(out))


def _n_failed(samples, m):
    return len(select_failed(samples, m))


def fmt_p(p: float | None) -> str:
    """A bootstrap p-value as it can be read: 0 of BOOT resamples on the other side is p < 1 / BOOT."""
    return "-" if p is None else (f"< {1 / BOOT:.4f}" if p == 0 else str(p))


def markdown(out: dict) -> str:
    lines = [f"# Breakpoint locators on the real teacher (`{out['command']}`)", "",
             "Qwen2.5-Coder-1.5B (GGUF, llama.cpp, one thread), the GEAR probe's corner problems, M = 2 failed "
             "trajectories per problem, N = 2 continuations, the same seeds for every locator; entropy and random "
             "in the paper's window (first_third_tokens, back-up 1). Teacher tokens include the locator's own cost "
             "(generated + teacher-forced). Verified = answer-correct and the step checker accepts the whole "
             "training completion. 95% intervals: bootstrap over problems (2,000 resamples); the ratio's interval "
             "leaves out resamples where entropy has no verified repair, so read the difference's. Baselines: the "
             "GEAR probe's answer-guided restarts and extra plain samples of the same problems (drawn in that "
             "probe, with parallel decoding).", ""]
    if out["partial"]:
        lines += [f"**Partial run:** problems finished per locator {out['problems_done_per_locator']} of "
                  f"{out['corner_problems']}; each table compares only the problems all its rows finished.", ""]
    titles = {"main": ", ".join(out["tables"]["main"]["locators"]), "rollout": "rollout against entropy"}
    for key, tab in out["tables"].items():
        lines += [f"## {titles[key]} ({tab['problems']} problems)", "",
                  "| source | continuations | answer-correct | verified | problems answer / verified | teacher tokens "
                  "(locator gen / forced) | verified per 1k tokens [95% CI] | minus entropy [95% CI]; ratio [95% CI]; "
                  "paired bootstrap p (Holm over the locators) | cuts "
                  "keeping only correct steps | restarts |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, e in tab["rows"].items():
            ratio = (f"{e['diff_vs_entropy_per_1k']:+} [{e['diff_vs_entropy_ci95'][0]}, {e['diff_vs_entropy_ci95'][1]}]; "
                     f"x{e['ratio_to_entropy']} [{e['ratio_to_entropy_ci95'][0]}, {e['ratio_to_entropy_ci95'][1]}]; "
                     f"p {fmt_p(e['diff_vs_entropy_p_bootstrap'])}"
                     + (f" (Holm {fmt_p(e['diff_vs_entropy_p_holm'])})" if "diff_vs_entropy_p_holm" in e else "")) \
                if "diff_vs_entropy_per_1k" in e else "-"
            ci = e["verified_per_1k_tokens_ci95"] or [None, None]
            lines.append(f"| {name} | {e['continuations']} | {e['correct']} | {e['verified']} | "
                         f"{e['problems_correct']} / {e['problems_verified']} | {e['all_tokens']:,} "
                         f"({e['loc_generated']:,} / {e['loc_forced']:,}) | {e['verified_per_1k_tokens']} "
                         f"[{ci[0]}, {ci[1]}] | {ratio} | {e.get('clean_cut_share', '-')} | {e.get('restart_share', '-')} |")
        lines.append("")
    j = out.get("judge_margin_auroc_false_steps") or {}
    if j.get("auroc") is not None:
        lines += [f"The judge's verdict margin, log p(incorrect) - log p(correct), scores the {j['false_steps']} steps "
                  f"holding a false equation above the {j['true_steps']} steps whose equations hold with AUROC "
                  f"{j['auroc']} (95% CI {j['auroc_ci95'][0]}-{j['auroc_ci95'][1]}, bootstrap over its {j['sources']} "
                  f"source trajectories; 0.5: no better than chance).", ""]
    return "\n".join(lines)


def plot(out: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(out["tables"])
    fig, axes = plt.subplots(1, len(keys), figsize=(11, 4), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1][:len(keys)]})
    axes = axes[0]
    for ax, key in zip(axes, keys):
        tab = out["tables"][key]
        names = list(tab["rows"])
        vals = [tab["rows"][n]["verified_per_1k_tokens"] or 0 for n in names]
        cis = [tab["rows"][n]["verified_per_1k_tokens_ci95"] or [0, 0] for n in names]
        err = np.array([[v - lo for v, (lo, _) in zip(vals, cis)], [hi - v for v, (_, hi) in zip(vals, cis)]])
        ax.bar(names, vals, yerr=np.clip(err, 0, None), capsize=4, color=["C0" if n in LOCATORS else "C7" for n in names])
        ax.set_title(f"{tab['problems']} problems" + (" (partial run)" if out["partial"] else ""))
        plt.setp(ax.get_xticklabels(), rotation=25, ha="right")
    axes[0].set_ylabel("verified repairs per 1k teacher tokens\n(locator cost included; 95% bootstrap CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


STAGES = {"run": stage_run, "report": stage_report}

if __name__ == "__main__":
    os.chdir(ROOT)
    for name in sys.argv[1:] or ["run", "report"]:
        STAGES[name]()
