"""`heal inspect RUN PROBLEM_ID`: one problem's GEAR story as a PNG.

Per repaired trajectory: the teacher's token entropy, step means, surges, the breakpoint and the
cut; below it, every continuation with its answer, step-checker verdict and PURE scores.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from heal.runs import load_stage0
from heal.records import CANDIDATE, SCORED, continuation_index, read_records


def _short(s, n=60):
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def render_problem(run_dir: str | Path, problem_id: str, out: str | Path | None = None, max_sources: int = 3) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    problems, by_problem, tiers = load_stage0(run_dir)
    if problem_id not in problems:
        raise KeyError(f"problem {problem_id!r} is not in {run_dir / 'problems.jsonl'}")
    repairs = list(read_records(run_dir / "repairs.jsonl", CANDIDATE)) if (run_dir / "repairs.jsonl").exists() else []
    scored = ({r["key"]: r for r in read_records(run_dir / "scored.jsonl", SCORED)}
              if (run_dir / "scored.jsonl").exists() else {})
    by_src: dict[str, list[dict]] = defaultdict(list)
    for r in repairs:
        if r["problem_id"] == problem_id:
            by_src[r["source_key"]].append(r)
    samples = {s["key"]: s for s in by_problem.get(problem_id, [])}
    prob, tier = problems[problem_id], tiers.get(problem_id, {})
    sources = list(by_src)[:max_sources]
    n = max(1, len(sources))
    fig = plt.figure(figsize=(13, 5.2 * n))
    fig.suptitle(f"{problem_id}  ({tier.get('tier', '?')}, teacher {tier.get('correct', '?')}/{tier.get('n', '?')})  "
                 f"answer {prob['answer']}\n{_short(prob['question'], 120)}", fontsize=10)
    if not sources:
        fig.text(0.5, 0.5, "no GEAR repairs for this problem (run `heal repair`)", ha="center")
    for i, src in enumerate(sources):
        conts = sorted(by_src[src], key=lambda r: continuation_index(r["key"]))
        first = conts[0]
        ent = np.asarray(samples[src]["entropy"][: first["n_source_tokens"]] if src in samples else [])
        ax = fig.add_axes([0.06, 1 - (i + 0.52) / n, 0.9, 0.36 / n])
        if len(ent):
            ax.plot(ent, lw=0.7, color="0.55", label="token entropy H_t (nats)")
        for j, ((a, b), h) in enumerate(zip(first["step_spans"], first["step_entropy"])):
            ax.hlines(h, a, b, colors="tab:blue", lw=2.2, label="step mean h_i" if j == 0 else None)
            ax.axvline(a, color="0.85", lw=0.6)
        bp = first["breakpoint"]
        # bp["surge"] holds the locator's own score at b (entropy: the surge; rollout: the success drop;
        # judge: the verdict margin); records before gear.locator existed are the entropy locator's.
        locator = first.get("locator", "entropy")
        what = {"entropy": "surge", "rollout": "drop", "judge": "margin"}.get(locator)
        ax.axvline(bp["token"], color="tab:red", lw=1.8,
                   label=f"breakpoint ({locator}) step {bp['step']}" + (f" ({what} {bp['surge']:+.2f})" if what else ""))
        ax.axvspan(0, first["cut_token"], color="tab:green", alpha=0.12,
                   label=f"kept prefix ({bp['kept_steps']} steps{', restart' if first['restart'] else ''})")
        ax.axvline(first["cut_token"], color="k", ls="--", lw=1.2)
        ax.set_xlim(0, max(len(ent), 1))
        ax.set_title(f"{src}: wrong answer {first['source_pred']}, locator {locator}, window {first['window']}, "
                     f"back-up {first['backup']}",
                     fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="upper right")
        ax.set_xlabel("token", fontsize=8)
        lines = ["  #  answer        verdict   step check                               S  rho_step  PURE"]
        for r in conts:
            s = scored.get(r["key"], {})
            ra = "-" if s.get("S") is None else f"{s['S']:.3f}"
            rs = "-" if s.get("rho_step") is None else f"{s['rho_step']:.2f}"
            pure = "" if not s else ("accept" if s.get("accepted") else _short(s.get("reason", "reject"), 28))
            mark = "dup" if r.get("duplicate") else ("right" if r["correct"] else "wrong")
            sc = ("verified" if r["derivation_ok"] else "-" if not r["correct"]
                  else _short(r["step_check"]["reason"], 34))
            lines.append(f"{continuation_index(r['key']):>3}  {_short(r['pred'], 12):<13} {mark:<9} {sc:<34} {ra:>7}  {rs:>8}  {pure}")
        fig.text(0.06, 1 - (i + 0.6) / n, "\n".join(lines[:22]), family="monospace", fontsize=7, va="top")
    out = Path(out) if out else run_dir / "inspect" / f"{problem_id}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
