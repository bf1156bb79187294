"""`heal report RUN...`: every method side by side (markdown), plots, and summary.json.

Reads what the stages wrote (sample_summary.json, data/sizes.json, repairs.jsonl, scored.jsonl,
checkpoints/*/stage-*/heal_stage.json, eval/summary.json); a stage that has not run is simply
missing from the report. A run evaluated on several benchmarks (eval.benchmarks) gets the evaluation
tables once per benchmark, from eval/summary.json's "benchmarks" and RUN/eval/<name>/.
"""

from __future__ import annotations

import json
from pathlib import Path

from heal.store import atomic_write_text, read_jsonl


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(x, digits=3):
    return "-" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def build_summary(run_dir: Path) -> dict:
    ev = _load(run_dir / "eval" / "summary.json") or {"models": {}, "tiers": {}}
    out = {"run": str(run_dir), "stage0": _load(run_dir / "sample_summary.json"),
           "data": _load(run_dir / "data" / "sizes.json"), "test_tiers": ev.get("tiers", {}),
           "test_tiers_from": ev.get("tiers_from"), "methods": {},
           "data_uncapped": _load(run_dir / "data" / "uncapped_sizes.json")}
    if "benchmarks" in ev:  # eval.benchmarks: one summary per benchmark, from RUN/eval/<name>/
        out["benchmarks"] = {name: {"test_tiers": b.get("tiers", {}), "test_tiers_from": b.get("tiers_from"),
                                    **eval_summary(run_dir / "eval" / name, b)}
                             for name, b in ev["benchmarks"].items()}
    else:
        out.update(eval_summary(run_dir / "eval", ev))
    if (run_dir / "data" / "sizes.json").exists():
        out["data_detail"] = data_detail(run_dir)
    if training := training_detail(run_dir):
        out["training"] = training
    if (run_dir / "repairs.jsonl").exists():
        from heal.gear import summarize_repairs

        out["repairs"] = summarize_repairs(run_dir)
    return out


def eval_summary(eval_dir: Path, ev: dict) -> dict:
    """One held-out set's part of summary.json: its methods (from its summary `ev`), and the
    contamination report and sampling settings found in `eval_dir` (RUN/eval or RUN/eval/<name>)."""
    out: dict = {"methods": {name: method_summary(m) for name, m in ev.get("models", {}).items()}}
    if contamination := _load(eval_dir / "contamination.json"):
        out["contamination"] = contamination_summary(contamination)
    if settings := _load(eval_dir / "settings.json"):
        out["eval_sampling"] = {k: settings.get("sampling", {}).get(k) for k in ("temperature", "top_p", "max_new_tokens")}
    return out


def method_summary(m: dict) -> dict:
    """One model's row of summary.json, from its entry of eval/summary.json."""
    return {
        "pass@1": m["pass@1"], "se": m["se"], "n": m["n"], "problems": m["problems"], "greedy": m["greedy"],
        "per_tier": {t: v["pass@1"] for t, v in m.get("per_tier", {}).items()},
        "verified_share_of_correct": m.get("verified_share_of_correct"),
        "vs_sft_rs": m.get("vs_sft_rs"), "vs_heal": m.get("vs_heal"),
        "answer_rate": m.get("answer_rate"), "equation_accuracy": m.get("equation_accuracy"),
        "equations": m.get("equations"),
        # The metrics reasoning-model papers report (absent from runs evaluated before they existed).
        "avg@n": m.get("avg@n"), "maj@k": m.get("maj@k"), "pass@k": m.get("pass@k"),
        "mean_tokens": m.get("mean_tokens"), "truncation_rate": m.get("truncation_rate"),
        "truncation_rate_sampled": m.get("truncation_rate_sampled"),
    }


def contamination_summary(c: dict) -> dict:
    """eval/contamination.json in brief: per benchmark, test problems sharing an n-gram with training
    (8 and 32; a run from before the 32-gram count has its one `ngram` only) and how many were dropped."""
    counts = {n: v["contaminated"] for n, v in c.get("by_ngram", {}).items()} or {str(c["ngram"]): c["dropped"]}
    return {"benchmark": c.get("benchmark"), "test": c["test"], "train": c["train"], "ngram": c["ngram"],
            "dropped": c["dropped"], "contaminated": counts}


def data_detail(run_dir: Path) -> dict:
    """Per training set: examples, problems covered (by Stage 0 tier), and how many examples the step
    checker verifies. Answer-correctness is what admits an example; the step checker is the honest
    count (repairs that reach the answer often fabricate their derivation)."""
    from heal.stepcheck import check_steps

    problems = {r["id"]: r for r in read_jsonl(run_dir / "problems.jsonl")}
    tiers = {r["problem_id"]: r["tier"] for r in read_jsonl(run_dir / "tiers.jsonl")}
    checked = {}  # D2/D3 records carry the step check made when they were generated
    for name in ("guided.jsonl", "repairs.jsonl"):
        if (run_dir / name).exists():
            checked |= {r["key"]: bool(r.get("derivation_ok")) for r in read_jsonl(run_dir / name)}
    out = {}
    for path in sorted((run_dir / "data").glob("*.jsonl")):
        rows = list(read_jsonl(path))
        for ex in rows:  # Stage 0 examples (D1 is part of ALL): checked once each
            if ex["key"] not in checked:
                p = problems[ex["problem_id"]]
                checked[ex["key"]] = check_steps([ex["completion"]], p["answer"], p["question"]).ok
        ok = [checked[ex["key"]] for ex in rows]
        by_tier = {t: len({ex["problem_id"] for ex in rows if tiers.get(ex["problem_id"]) == t})
                   for t in ("solved", "hard", "corner")}
        out[path.stem] = {"examples": len(rows), "verified": int(sum(ok)),
                          "problems": len({ex["problem_id"] for ex in rows}), "problems_by_tier": by_tier,
                          "verified_problems": len({ex["problem_id"] for ex, o in zip(rows, ok) if o})}
    return out


def finished_stages(run_dir: Path) -> list[Path]:
    """The heal_stage.json of every stage of the methods whose training finished (listed in
    checkpoints/final.json): a method still training in the background is left out."""
    finished = _load(run_dir / "checkpoints" / "final.json") or {}
    return [meta for meta in sorted((run_dir / "checkpoints").glob("*/stage-*/heal_stage.json"))
            if meta.parent.parent.name in finished]


def training_detail(run_dir: Path) -> dict:
    """Per trained method, its stages in order: data sets, examples, optimizer steps, learning rate,
    mean loss and the mean of the last 5 logged losses (how tightly the stage fit its data). This is
    the budget the methods are matched on. Only methods whose training finished (listed in
    checkpoints/final.json): a method still training has no row yet."""
    out: dict[str, list] = {}
    for meta in finished_stages(run_dir):
        m = json.loads(meta.read_text())
        curve = m.get("loss_curve") or []
        out.setdefault(meta.parent.parent.name, []).append({
            "stage": m["stage"]["name"], "data": m["stage"]["data"], "examples": m["examples"], "steps": m["steps"],
            "learning_rate": m["stage"]["learning_rate"], "mean_loss": m.get("train_loss"),
            "continuous": "schedule" in m["stage"],  # one schedule across the stages (heal_continuous)
            "last_loss": sum(curve[-5:]) / len(curve[-5:]) if curve else None})
    return out


def markdown(summary: dict) -> str:
    lines = [f"# heal report: {summary['run']}", ""]
    s0 = summary.get("stage0")
    if s0:
        t = s0["tiers"]
        lines += [f"Teacher Stage 0: {s0['problems']} problems x K={s0['k']}, pass rate {_fmt(s0['pass_rate'])}, "
                  f"truncated {_fmt(s0['truncation_rate'])}; tiers solved {t['solved']}, hard {t['hard']}, "
                  f"corner {t['corner']} (teacher ceiling: {t['corner'] / max(1, s0['problems']):.1%} corner).", ""]
    if summary.get("data"):
        d = summary["data"]
        sizes_row = lambda label, x: f"| {label} | " + " | ".join(  # noqa: E731
            str(x.get(k)) for k in ("D1", "D2", "D3", "D2raw", "D3raw", "ALL")) + " |"
        lines += ["| data | D1 | D2 (PURE) | D3 (PURE) | D2 raw | D3 raw | keep-all |", "|---|---|---|---|---|---|---|",
                  sizes_row("examples", d)]
        if summary.get("data_uncapped"):  # train.max_per_problem was set: the sets above are capped
            lines.append(sizes_row("before the per-problem cap", summary["data_uncapped"]))
        lines.append("")
    if summary.get("data_detail"):
        dd = summary["data_detail"]
        lines += ["Training sets (every example is answer-correct except in ALL; *verified*: the arithmetic step "
                  "checker accepts its derivation):", "",
                  "| set | examples | step-verified | problems (solved / hard / corner) | problems with a verified example |",
                  "|---|---|---|---|---|"]
        for name in ("D1", "D2", "D3", "D2raw", "D3raw", "ALL"):
            if name in dd:
                x = dd[name]
                t = x["problems_by_tier"]
                lines.append(f"| {name} | {x['examples']} | {x['verified']} ({x['verified'] / max(1, x['examples']):.0%}) | "
                             f"{x['problems']} ({t['solved']} / {t['hard']} / {t['corner']}) | {x['verified_problems']} |")
        lines.append("")
    if summary.get("repairs"):
        r = summary["repairs"]
        lines += [f"GEAR: {r['trajectories']} failed trajectories of {r['problems']} problems, {r['continuations']} "
                  f"continuations: {r['answer_correct']} answer-correct, {r['derivation_verified']} derivation-verified; "
                  f"problems repaired {r['problems_answer_repaired']} (answer) / {r['problems_verified_repaired']} (verified).", ""]
    if summary.get("training"):
        lines += ["Training (each stage starts from the previous one's weights; *per stage*: its own warm-up and "
                  "schedule, *one*: one optimizer and one schedule across the stages; loss: mean over the stage / "
                  "mean of its last 5 logged steps):", "",
                  "| method | stages: data (examples, steps) | steps | schedule | lr | loss per stage |",
                  "|---|---|---|---|---|---|"]
        for name, stages in summary["training"].items():
            schedule = "one" if len(stages) == 1 or stages[0].get("continuous") else "per stage"
            lines.append(f"| {name} | " + "; ".join(f"{st['stage']}: {'+'.join(st['data'])} ({st['examples']}, {st['steps']})"
                                                     for st in stages)
                         + f" | {sum(st['steps'] for st in stages)} | {schedule} | "
                         + " / ".join(f"{st['learning_rate']:g}" for st in stages) + " | "
                         + " / ".join(f"{_fmt(st['mean_loss'])} ({_fmt(st['last_loss'])})" for st in stages) + " |")
        lines.append("")
    lines += eval_tables(summary)
    for name, bench in (summary.get("benchmarks") or {}).items():
        lines += [f"## Benchmark {name}", ""] + eval_tables(bench)
    return "\n".join(lines)


def eval_tables(s: dict) -> list[str]:
    """One held-out set's lines: its contamination line, the pass@1 table, the reasoning-paper metrics
    and the paired differences; `s` has test_tiers, methods, contamination and eval_sampling."""
    lines: list[str] = []
    if s.get("contamination"):
        lines += [contamination_line(s["contamination"]), ""]
    if s["methods"]:
        tiers = [t for t in ("solved", "hard", "corner") if t in s.get("test_tiers", {})]
        head = ("| method | pass@1 | ± se | n | greedy | " + " | ".join(f"{t} ({s['test_tiers'][t]})" for t in tiers)
                + " | verified / correct | answered | true equations |")
        if s.get("test_tiers_from"):
            lines += [f"Test tiers (the teacher's pass rate on each test problem) from {s['test_tiers_from']}.", ""]
        lines += [head, "|" + "---|" * (8 + len(tiers))]
        for name, m in s["methods"].items():
            lines.append(f"| {name} | {_fmt(m['pass@1'])} | {_fmt(m['se'])} | {m['n']} | {_fmt(m['greedy'])} | "
                         + " | ".join(_fmt(m["per_tier"].get(t)) for t in tiers)
                         + f" | {_fmt(m['verified_share_of_correct'])} | {_fmt(m.get('answer_rate'))} | "
                         + f"{_fmt(m.get('equation_accuracy'))} ({_fmt(m.get('equations'))}) |")
        lines.append("")
        lines += reasoning_table(s)
        for baseline in ("sft_rs", "heal"):
            paired = {n: m[f"vs_{baseline}"] for n, m in s["methods"].items() if m.get(f"vs_{baseline}")}
            if not paired:
                continue
            lines += [f"Difference to {baseline}, paired over the same problems (pass@1 difference ± its paired SE):",
                      "", "| method | all | " + " | ".join(tiers) + " |", "|" + "---|" * (2 + len(tiers))]
            for name, d in paired.items():
                cells = [d] + [d.get("per_tier", {}).get(t) for t in tiers]
                lines.append(f"| {name} | " + " | ".join(
                    "-" if not c or c["diff"] is None else f"{c['diff']:+.3f} ± {_fmt(c['se'])}" for c in cells) + " |")
            lines.append("")
    return lines


def contamination_line(c: dict) -> str:
    shared = ", ".join(f"{n}-gram overlap: {k}" for n, k in sorted(c["contaminated"].items(), key=lambda x: int(x[0])))
    name = f" {c['benchmark']}" if c.get("benchmark") else ""
    return (f"Held-out set{name}: {c['test']} problems checked against {c['train']} training problems; "
            f"{shared}; dropped ({c['ngram']}-grams): {c['dropped']}.")


def reasoning_table(summary: dict) -> list[str]:
    """The metrics reasoning-model papers report, one row per method that has them."""
    rows = {n: m for n, m in summary["methods"].items() if m.get("avg@n") and m["avg@n"]["mean"] is not None}
    if not rows:
        return []
    label = lambda what, ns: f"{what}@{ns.pop()}" if len(ns) == 1 else f"{what}@n"  # noqa: E731
    avg = label("avg", {m["avg@n"]["n"] for m in rows.values()})
    maj = label("maj", {m["maj@k"]["k"] for m in rows.values()})
    ks = sorted({int(k) for m in rows.values() for k in (m.get("pass@k") or {}) if k != "1"})  # pass@1 = avg@n
    s = summary.get("eval_sampling") or {}
    setting = f" (temperature {s['temperature']}, top-p {s['top_p']})" if s.get("temperature") is not None else ""
    out = [f"Sampled answers{setting}: {avg} ± its SE over problems; {maj}, the majority answer (answers the verifier "
           f"accepted count as one, the others are compared as normalised strings; a tie goes to the answer given "
           f"first); pass@k, the unbiased estimator of Chen et al. (2021); mean length in tokens; share truncated at "
           f"max_new_tokens:", "",
           f"| method | {avg} | ± se | {maj} | " + "".join(f"pass@{k} | " for k in ks) + "mean tokens | truncated |",
           "|" + "---|" * (6 + len(ks))]
    for name, m in rows.items():
        pk = m.get("pass@k") or {}
        tokens = "-" if m.get("mean_tokens") is None else f"{m['mean_tokens']:.1f}"
        out.append(f"| {name} | {_fmt(m['avg@n']['mean'])} | {_fmt(m['avg@n']['se'])} | {_fmt(m['maj@k']['mean'])} | "
                   + "".join(f"{_fmt((pk.get(str(k)) or {}).get('mean'))} | " for k in ks)
                   + f"{tokens} | {_fmt(m.get('truncation_rate_sampled'))} |")
    return out + [""]


def plots(run_dir: Path, summary: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    if summary["methods"]:
        made.append(accuracy_plot(summary, out_dir / "accuracy.png", "held-out accuracy per method and teacher tier"))
    for name, bench in (summary.get("benchmarks") or {}).items():
        if bench["methods"]:
            made.append(accuracy_plot(bench, out_dir / f"accuracy-{name}.png", f"{name}: accuracy per method and teacher tier"))
    if summary.get("data"):
        d, dd = summary["data"], summary.get("data_detail", {})
        stages = ["I: D1", "II: +D2", "III: +D3"]
        kept = [d["D1"], d["D2"], d["D3"]]
        verified = [dd.get(k, {}).get("verified", 0) for k in ("D1", "D2", "D3")]
        rejected = [0, d["D2raw"] - d["D2"], d["D3raw"] - d["D3"]]
        below = [0, d["D1"], d["D1"] + d["D2"]]  # cumulative: each stage adds to the previous ones' data
        fig, ax = plt.subplots(figsize=(5.4, 3.4))
        ax.bar(stages, below, color="tab:blue", alpha=0.25, label="earlier stages")
        ax.bar(stages, verified, bottom=below, color="tab:green", label="new, step-verified")
        ax.bar(stages, [k - v for k, v in zip(kept, verified)], bottom=[b + v for b, v in zip(below, verified)],
               color="tab:orange", label="new, answer-correct only")
        ax.bar(stages, rejected, bottom=[b + k for b, k in zip(below, kept)], color="tab:gray", alpha=0.5,
               label="rejected by PURE")
        ax.set_ylabel("training examples")
        ax.legend(fontsize=7)
        ax.set_title("data per PACE stage (cumulative" + (", capped per problem)" if summary.get("data_uncapped") else ")"),
                     fontsize=9)
        fig.tight_layout()
        made.append(out_dir / "data.png")
        fig.savefig(made[-1], dpi=110)
        plt.close(fig)
    if (run_dir / "scored.jsonl").exists():
        scored = [r for r in read_jsonl(run_dir / "scored.jsonl") if not r.get("prefilter")]
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        for ax, key in zip(axes, ("rho_ans", "rho_step")):
            for label, sel in (("verified", True), ("not verified", False)):
                vals = [r[key] for r in scored if r.get(key) is not None and bool(r["derivation_ok"]) == sel]
                if vals:
                    ax.hist(vals, bins=20, alpha=0.6, label=f"{label} ({len(vals)})")
            ax.set_title(key, fontsize=9)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.tight_layout()
        made.append(out_dir / "rho.png")
        fig.savefig(made[-1], dpi=110)
        plt.close(fig)
    if summary.get("repairs"):
        r = summary["repairs"]
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.bar(["continuations", "answer-correct", "verified"], [r["continuations"], r["answer_correct"], r["derivation_verified"]])
        ax.set_title("GEAR repair yield", fontsize=9)
        fig.tight_layout()
        made.append(out_dir / "repairs.png")
        fig.savefig(made[-1], dpi=110)
        plt.close(fig)
    return made


def accuracy_plot(s: dict, path: Path, title: str) -> Path:
    """pass@1 per method, overall (± SE) and per teacher tier, of one held-out set's summary `s`."""
    import matplotlib.pyplot as plt

    tiers = ["all"] + [t for t in ("solved", "hard", "corner") if t in s.get("test_tiers", {})]
    names = list(s["methods"])
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(names), 3.6))
    w = 0.8 / len(tiers)
    for i, t in enumerate(tiers):
        vals = [s["methods"][n]["pass@1"] if t == "all" else s["methods"][n]["per_tier"].get(t) for n in names]
        errs = [s["methods"][n]["se"] or 0 if t == "all" else 0 for n in names]
        ax.bar([k + i * w for k in range(len(names))], [v or 0 for v in vals], w, yerr=errs, label=t)
    ax.set_xticks([k + w * (len(tiers) - 1) / 2 for k in range(len(names))], names, rotation=20, fontsize=8)
    ax.set_ylabel("pass@1")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(run_dirs: list[str | Path]) -> list[Path]:
    written = []
    for rd in run_dirs:
        rd = Path(rd)
        summary = build_summary(rd)
        atomic_write_text(rd / "summary.json", json.dumps(summary, indent=2) + "\n")
        pngs = plots(rd, summary)
        md = markdown(summary) + "\n" + "\n".join(f"![{p.stem}](report/{p.name})" for p in pngs) + "\n"
        atomic_write_text(rd / "report.md", md)
        written.append(rd / "report.md")
    return written
