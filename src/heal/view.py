"""`heal view RUN`: a run as two self-contained HTML pages, view.html and report.html.

view.html: every problem (tier, pass rate, repair outcome, PURE verdicts; sortable, filterable) and,
per problem, the text: the failed source trajectories with tokens shaded by entropy, the steps, the
breakpoint, the cut, the kept prefix and the hint span; each continuation with its verdict, the step
checker's result (first false step highlighted) and its PURE scores against the threshold; the
answer-guided samples alike; the Stage 0 samples; the held-out evaluation records.
report.html: the tables of report.md, SVG plots, and from every count a link into view.html.

No server, no network, no model: scripts and styles are inline, and per-token text comes from the
teacher's tokenizer only when it is prepared on this machine (`--tokenizer`); without it the view
shades whole steps by their mean entropy and draws the token entropy as a curve. Each problem's
detail is a JSON island the page parses only when the problem is opened, and long traces draw
windows around the breakpoint and the cut with the rest folded, so a 32k-token trace opens fast.
Everything here is one pass over the records (linear in the run's size). A missing stage is named on
the page; a malformed record is named as file:line (store.read_jsonl), never a blank page.
"""

from __future__ import annotations

import html
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from heal.entropy import step_spans_from_pieces, token_pieces
from heal.records import continuation_index, tier_index
from heal.store import StoreError, atomic_write_text, read_jsonl

# What each artifact is and which command writes it: a missing one is named on the page with this.
ARTIFACTS = [
    ("problems.jsonl", "problems", "heal sample"),
    ("samples.jsonl", "Stage 0 samples", "heal sample"),
    ("tiers.jsonl", "tiers", "heal sample"),
    ("guided.jsonl", "answer-guided samples", "heal hint"),
    ("repairs.jsonl", "GEAR repairs", "heal repair"),
    ("scored.jsonl", "PURE scores", "heal filter"),
    ("data", "training sets D1-D3", "heal train"),
    ("eval/evals.jsonl", "held-out evaluation", "heal eval"),
]
DATA_SETS = ("D1", "D2", "D3", "D2raw", "D3raw", "ALL")


# ---------------------------------------------------------------- text: pieces and steps (linear)

# The linear piece decoder lives in heal.entropy (every stage shares it); the name stays for callers.
token_pieces_linear = token_pieces


def text_steps(text: str) -> list[tuple[int, int]]:
    """Character spans of the steps of `text`: `entropy.step_spans_from_pieces` with one character
    per piece (one pass since that function keeps flags, not the step's text)."""
    return step_spans_from_pieces(text)


def load_tokenizer(run_dir: Path, spec: str = "auto"):
    """(tokenizer or None, a sentence saying which). `auto`: the run's teacher, only if it is prepared
    on this machine (a tokenizer, never model weights); `none`: no tokenizer; else a folder or alias."""
    if spec == "none":
        return None, "no tokenizer (--tokenizer none): steps are shaded by their mean entropy"
    name = spec
    if spec == "auto":
        try:
            import yaml

            name = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {})["teacher"]["model"]
        except (OSError, KeyError, TypeError, ValueError):
            return None, ("no tokenizer (the run has no config.yaml naming its teacher): steps are shaded by their "
                          "mean entropy")
    from heal.models import ALIASES, is_prepared, resolve

    if spec == "auto" and not ((name in ALIASES and is_prepared(name)) or Path(name).expanduser().is_dir()):
        return None, (f"no tokenizer ({name} is not prepared here: `heal models prepare {name}` gives per-token "
                      f"text): steps are shaded by their mean entropy")
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(resolve(name).hf), f"per-token text from the tokenizer of {name}"
    except Exception as e:  # noqa: BLE001 -- any failure to load falls back to step shading
        return None, f"no tokenizer ({name}: {type(e).__name__}: {e}): steps are shaded by their mean entropy"


# ---------------------------------------------------------------- reading a run

class _Run:
    """What the page needs to say about the files: which are missing, which are malformed."""

    def __init__(self, run_dir: Path):
        self.dir, self.missing, self.errors = run_dir, [], []

    def read(self, rel: str, required: bool = False) -> list[dict]:
        path = self.dir / rel
        if not path.exists():
            if required:
                self.missing.append(rel)
            return []
        out = []
        try:
            for rec in read_jsonl(path):
                out.append(rec)
        except StoreError as e:
            self.errors.append(f"{e} (the records after it in this file are not shown)")
        except (OSError, UnicodeDecodeError) as e:
            self.errors.append(f"{path}: cannot be read ({e})")
        return out

    def json(self, rel: str):
        path = self.dir / rel
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            self.errors.append(f"{path}: not valid JSON ({e})")
            return None


def _run_section(run_dir: Path, name: str):
    """One section of the run's config.yaml (the echo `heal` writes), validated on its own, so a config
    written by another heal version still gives its PURE and Stage 0 settings; None if unreadable."""
    from heal.config import EvalConfig, PureConfig, SampleStageConfig

    try:
        import yaml

        raw = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get(name) or {}
        return {"pure": PureConfig, "sample": SampleStageConfig, "eval": EvalConfig}[name].model_validate(raw)
    except Exception:  # noqa: BLE001 -- no or foreign config: the stored verdicts are shown instead
        return None


def _pure_cfg(run_dir: Path):
    """The run's PURE settings (verdicts are re-applied with them, as `heal train` does), or None."""
    return _run_section(run_dir, "pure")


def _r(x, d=3):
    return None if x is None else round(float(x), d)


def _pure(rec: dict | None, cfg) -> dict | None:
    if not rec:
        return None
    accepted, reason = rec.get("accepted"), rec.get("reason")
    score, threshold = rec.get("score", "rho_step"), rec.get("threshold")
    if cfg is not None:
        from heal.pure import verdict

        accepted, reason = verdict(rec, cfg)
        score, threshold = cfg.score, cfg.threshold
    try:  # the score the verdict used, derived ones (pure.score_value) included
        from heal.pure import score_value

        value = score_value(rec, score, getattr(cfg, "eps", 0.01))
    except (ImportError, ValueError):
        value = rec.get(score)
    return {"value": _r(value), **{k: _r(rec.get(k)) for k in ("rho_step", "rho_ans", "S", "l_max", "S_ref")},
            "prefilter": rec.get("prefilter"),
            "score": score, "threshold": threshold, "accepted": bool(accepted), "reason": reason}


def _check(sc) -> dict | None:
    if not isinstance(sc, dict):  # eval records keep only the reason string
        return None if sc is None else {"reason": str(sc)}
    return {k: sc.get(k) for k in ("ok", "reason", "first_false_step", "first_false", "n_equations")}


def _prefix_chars(sample_text: str, rec: dict, csteps: list) -> tuple[int, bool]:
    """Where the cut falls in the source text without a tokenizer: after the kept steps when the text
    splits into as many steps as the tokens did, else the common prefix of the source text and the
    training text (which starts with the kept prefix), back to a line break. (position, exact?)"""
    bp, spans = rec.get("breakpoint") or {}, rec.get("step_spans") or []
    if rec.get("cut_token", 0) == 0:
        return 0, True
    if bp.get("mode") == "step" and len(csteps) == len(spans) and bp.get("kept_steps", 0) > 0:
        return csteps[bp["kept_steps"] - 1][1], True
    train, n = rec.get("training_text") or "", 0
    limit = min(len(sample_text), len(train))
    while n < limit and sample_text[n] == train[n]:
        n += 1
    nl = sample_text.rfind("\n", 0, n)
    return (nl + 1 if nl >= 0 else n), False


def _cont_index(rec: dict) -> int:
    """c of a continuation key "<source key>/gear/<c>" (continuations are shown in order)."""
    try:
        return continuation_index(str(rec["key"]))
    except ValueError:  # a key of another scheme: shown first
        return 0


def _source(sample: dict | None, conts: list[dict], scored: dict, cfg, tokenizer) -> dict:
    first = conts[0]
    n = first.get("n_source_tokens") or 0
    spans = first.get("step_spans") or []
    cut = first.get("cut_token", 0)
    out = {"key": first["source_key"], "pred": first.get("source_pred"), "steps": spans,
           "step_h": first.get("step_entropy") or [], "bp": first.get("breakpoint") or {}, "cut": cut,
           "restart": first.get("restart"), "window": first.get("window"), "backup": first.get("backup"),
           **{k: first.get(k) for k in ("hint_text", "hint_span", "hint_mode")},
           "n": n, "pieces": None, "text": None, "ent": [], "lp": []}
    if sample is not None:
        out["ent"] = [_r(x) for x in (sample.get("entropy") or [])[:n]]
        out["lp"] = [_r(x) for x in (sample.get("logprobs") or [])[:n]]
        text = sample.get("text") or ""
        if tokenizer is not None and sample.get("token_ids"):
            pieces = token_pieces_linear(tokenizer, sample["token_ids"][:n])
            joined = "".join(pieces)
            # Another model's tokenizer reads the ids as other text: then the stored text is shown.
            if text.startswith(joined) or joined.startswith(text):
                out["pieces"] = pieces
            else:
                out["tokenizer_mismatch"] = True
        if out["pieces"] is None:
            cs = text_steps(text)
            out.update(text=text, csteps=cs, approx=len(cs) != len(spans))
            out["cut_char"], exact = _prefix_chars(text, first, cs)
            out["approx"] = out["approx"] or not exact
    n_prefix_steps = sum(1 for a, _ in spans if a < cut)
    out["n_prefix_steps"] = n_prefix_steps
    rows = []
    for r in sorted(conts, key=_cont_index):
        chk = _check(r.get("step_check"))
        where, idx = None, None
        if chk and chk.get("first_false_step") is not None:
            f = chk["first_false_step"]
            where, idx = ("prefix", f) if f < n_prefix_steps else ("continuation", f - n_prefix_steps)
        text = r.get("continuation") or ""
        rows.append({"key": r["key"], "pred": r.get("pred"), "correct": r.get("correct"),
                     "dup": bool(r.get("duplicate")), "truncated": r.get("truncated"),
                     "ok": bool(r.get("derivation_ok")), "text": text,
                     "csteps": text_steps(text), "check": chk, "false_where": where, "false_step": idx,
                     "pure": _pure(scored.get(r["key"]), cfg), "training_text": r.get("training_text"),
                     "replaced_span": r.get("replaced_span")})
    out["conts"] = rows
    return out


def _guided(r: dict, scored: dict, cfg) -> dict:
    text = r.get("continuation") or ""
    chk = _check(r.get("step_check"))
    return {"key": r["key"], "pred": r.get("pred"), "correct": r.get("correct"), "dup": bool(r.get("duplicate")),
            "ok": bool(r.get("derivation_ok")), "truncated": r.get("truncated"), "text": text,
            "csteps": text_steps(text),
            "check": chk, "false_where": "continuation" if chk and chk.get("first_false_step") is not None else None,
            "false_step": chk.get("first_false_step") if chk else None, "pure": _pure(scored.get(r["key"]), cfg)}


def collect(run_dir: str | Path, tokenizer=None, tokenizer_note: str = "") -> dict:
    """Everything view.html shows, from the run's files: {run, notes, rows, details, evals}."""
    run_dir = Path(run_dir)
    run = _Run(run_dir)
    problems_l = run.read("problems.jsonl", required=True)
    samples = run.read("samples.jsonl", required=True)
    tiers = {r.get("problem_id"): r for r in run.read("tiers.jsonl", required=True)}
    guided = run.read("guided.jsonl", required=True)
    repairs = run.read("repairs.jsonl", required=True)
    scored_l = run.read("scored.jsonl", required=True)
    sets = {name: run.read(f"data/{name}.jsonl") for name in DATA_SETS}
    if not any(sets.values()):
        run.missing.append("data")
    cfg = _pure_cfg(run_dir)
    scored = {r.get("key"): r for r in scored_l}

    # Group once: every record is visited a fixed number of times (linear in the run).
    problems = {p.get("id"): p for p in problems_l}
    by_problem: dict[str, list] = defaultdict(list)
    sample_by_key = {}
    for s in samples:
        by_problem[s.get("problem_id")].append(s)
        sample_by_key[s.get("key")] = s
    rep_by_problem: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in repairs:
        rep_by_problem[r.get("problem_id")][r.get("source_key")].append(r)
    gui_by_problem: dict[str, list] = defaultdict(list)
    for r in guided:
        gui_by_problem[r.get("problem_id")].append(r)
    set_by_problem: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    verified = {r.get("key"): bool(r.get("derivation_ok")) for r in repairs + guided}
    for name, rows in sets.items():
        for ex in rows:
            set_by_problem[ex.get("problem_id")][name].append(ex.get("key"))
    for pid in list(rep_by_problem) + list(gui_by_problem) + list(by_problem):  # records of unknown problems still show
        problems.setdefault(pid, {"id": pid, "question": "(not in problems.jsonl)", "answer": "?"})

    rows, details = [], {}
    for pid, p in problems.items():
        try:
            row, detail = _problem(pid, p, tiers.get(pid), by_problem.get(pid, []), rep_by_problem.get(pid, {}),
                                   gui_by_problem.get(pid, []), set_by_problem.get(pid, {}), verified, scored, cfg,
                                   sample_by_key, tokenizer)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            run.errors.append(f"problem {pid}: a record lacks a field or has the wrong type ({type(e).__name__}: {e})")
            continue
        rows.append(row)
        details[pid] = detail

    eval_view = _eval_records(run, run_dir)
    # Runs nested in this one (the GEAR probe keeps one per window): named, so they can be viewed.
    subruns = sorted(str(p.parent.relative_to(run_dir))
                     for pat in ("*/tiers.jsonl", "*/*/tiers.jsonl") for p in run_dir.glob(pat))
    notes = {"tokenizer": tokenizer_note, "missing": [(a, what, cmd) for a, what, cmd in ARTIFACTS if a in run.missing],
             "errors": run.errors, "subruns": subruns,
             "pure": None if cfg is None else {"score": cfg.score, "threshold": cfg.threshold,
                                               "verify_steps": cfg.verify_steps}}
    return {"run": str(run_dir), "notes": notes, "rows": rows, "details": details, "evals": eval_view}


def _outcome(cands: list[dict]) -> list[int]:
    """[candidates, answer-correct, derivation-verified] of a problem's repairs or guided samples."""
    return [len(cands), sum(bool(c.get("correct")) for c in cands), sum(bool(c.get("derivation_ok")) for c in cands)]


def _problem(pid, p, tier, samples, sources, guided, in_sets, verified, scored, cfg, sample_by_key, tokenizer):
    reps = [r for rs in sources.values() for r in rs if not r.get("duplicate")]
    cands = reps + [g for g in guided if not g.get("duplicate")]
    pure = [_pure(scored[c["key"]], cfg) for c in cands if c.get("key") in scored]
    n, ok = len(samples), sum(s.get("correct") is True for s in samples)
    tags = {f"tier:{(tier or {}).get('tier', 'none')}"}
    if reps:
        tags.add("repair:any")
    tags |= {"repair:correct"} if any(r.get("correct") for r in reps) else set()
    tags |= {"repair:verified"} if any(r.get("derivation_ok") for r in reps) else set()
    tags |= {"guided:any"} if guided else set()
    tags |= {"guided:correct"} if any(g.get("correct") for g in guided) else set()
    tags |= {"guided:verified"} if any(g.get("derivation_ok") for g in guided) else set()
    tags |= {"pure:accepted"} if any(x["accepted"] for x in pure) else set()
    tags |= {"pure:rejected"} if any(not x["accepted"] for x in pure) else set()
    for name, keys in in_sets.items():
        tags.add(f"set:{name}")
        if any(verified.get(k, False) for k in keys):
            tags.add(f"setv:{name}")
    tags |= {"restart"} if any(r.get("restart") for r in reps) else set()
    row = {"id": pid, "q": str(p.get("question", ""))[:160], "tier": (tier or {}).get("tier"),
           "pass": round(ok / n, 3) if n else None, "k": n,
           "rep": _outcome(reps), "gui": _outcome(guided), "pure": [sum(x["accepted"] for x in pure), len(pure)],
           "sets": sorted(in_sets), "tags": " ".join(sorted(tags))}
    detail = {"id": pid, "question": p.get("question"), "answer": p.get("answer"), "tier": tier,
              "sets": {k: v for k, v in in_sets.items()},
              "samples": [{"key": s.get("key"), "pred": s.get("pred"), "correct": s.get("correct"),
                           "truncated": s.get("truncated"), "n": s.get("n_tokens"), "text": s.get("text") or ""}
                          for s in sorted(samples, key=lambda s: s.get("sample_index", 0))],
              "sources": [_source(sample_by_key.get(src), conts, scored, cfg, tokenizer)
                          for src, conts in sources.items()],
              "guided": [_guided(g, scored, cfg) for g in guided]}
    return row, detail


def _eval_records(run: _Run, run_dir: Path) -> dict:
    """The evaluation tab's records: eval/, or with eval.benchmarks each RUN/eval/<name>/, its problem
    ids shown as "<name>/<id>" (two benchmarks' ids may collide) and its tiers its own."""
    ec = _run_section(run_dir, "eval")
    if ec is None or not ec.benchmarks:
        evals = run.read("eval/evals.jsonl", required=True)
        return _evals(evals, {r.get("id"): r for r in run.read("eval/problems.jsonl")}, run_dir,
                      None if ec is None else ec.n_samples)
    out: dict = {"records": [], "problems": {}}
    for name, b in ec.benchmarks.items():
        one = _evals(run.read(f"eval/{name}/evals.jsonl"), {r.get("id"): r for r in run.read(f"eval/{name}/problems.jsonl")},
                     run_dir, ec.n_samples if b.n_samples is None else b.n_samples)
        out["records"] += [{**r, "pid": f"{name}/{r['pid']}"} for r in one["records"]]
        out["problems"] |= {f"{name}/{k}": v for k, v in one["problems"].items()}
    if not out["records"]:
        run.missing.append("eval/evals.jsonl")
    return out


def _evals(evals: list[dict], eval_problems: dict, run_dir: Path, n_samples: int | None = None) -> dict:
    """Held-out records per method of one held-out set, and each test problem's tier (the teacher's
    pass rate on it, as `heal eval` computes it). `n_samples`: the n `heal eval` summarizes (None:
    every record)."""
    from heal.runs import tier_of

    s = _run_section(run_dir, "sample")
    # The teacher's tier samples (eval.tier_samples) set the tiers and are scored by nobody: they are
    # not shown. Without them, the tiers come from the teacher's scored samples.
    tier_recs = [r for r in evals if r.get("model") == "teacher" and tier_index(r.get("sample")) is not None]
    evals = [r for r in evals if tier_index(r.get("sample")) is None]
    if n_samples is not None:  # the records `heal eval` summarizes: the current n samples (and greedy)
        evals = [r for r in evals
                 if r.get("sample") == "greedy" or (isinstance(r.get("sample"), int) and r["sample"] < n_samples)]
    teacher = defaultdict(list)
    for r in tier_recs or evals:
        if r.get("model") == "teacher" and r.get("sample") != "greedy":
            teacher[r.get("problem_id")].append(r.get("correct") is True)
    tiers = {}
    if s is not None:
        for pid, cs in teacher.items():
            tiers[pid] = tier_of(sum(cs), len(cs), s.solved_min_pass, round(s.corner_max_correct * len(cs) / s.k))
    out = [{"model": r.get("model"), "pid": r.get("problem_id"), "sample": r.get("sample"), "pred": r.get("pred"),
            "correct": r.get("correct"), "ok": bool(r.get("derivation_ok")), "check": r.get("step_check"),
            "tier": tiers.get(r.get("problem_id")), "text": r.get("text") or ""} for r in evals]
    questions = {k: {"q": v.get("question"), "a": v.get("answer")} for k, v in eval_problems.items()}
    return {"records": out, "problems": questions}


# ---------------------------------------------------------------- HTML

def _island(id_: str, obj) -> str:
    """A JSON island: parsed by the page only when needed. Every `<` (only ever inside a JSON string)
    is written as \\u003c, so no text in a record can close the script element or open a comment."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    return f'<script type="application/json" id="{html.escape(id_)}">{text}</script>\n'


def render_view(data: dict, report_name: str = "report.html") -> str:
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>heal view: {html.escape(data['run'])}</title>"
             f"<style>{VIEW_CSS}</style></head><body>",
             f"<header><b>heal view</b> <span id=run>{html.escape(data['run'])}</span> · "
             f"<a href='{html.escape(report_name)}'>report</a> · <a href='#eval=' id=evallink>evaluation</a>"
             f"<span id=legend></span></header><div id=notes></div>"
             "<main><section id=list><div id=filters></div><div id=tablewrap><table id=problems></table></div></section>"
             "<section id=detail><p class=hintline>Pick a problem on the left.</p></section></main><div id=tip></div>",
             _island("meta", {"run": data["run"], "notes": data["notes"]}),
             _island("rows", data["rows"])]
    ids = {}
    for i, (pid, detail) in enumerate(data["details"].items()):
        ids[pid] = f"p{i}"
        parts.append(_island(f"p{i}", detail))
    parts.append(_island("ids", ids))
    parts.append(_island("evals", data["evals"]))
    parts.append(f"<script>{VIEW_JS}</script></body></html>\n")
    return "".join(parts)


def write_view(run_dir: str | Path, out: str | Path | None = None, tokenizer: str = "auto",
               report: bool = True) -> list[Path]:
    """Write RUN/view.html (or `out`) and, with `report`, report.html beside it; returns the paths."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run directory")
    out = Path(out) if out else run_dir / "view.html"
    tok, note = load_tokenizer(run_dir, tokenizer)
    atomic_write_text(out, render_view(collect(run_dir, tok, note)))
    written = [out]
    if report:
        rep = out.parent / "report.html"
        atomic_write_text(rep, render_report(run_dir, view_name=out.name))
        written.append(rep)
    return written


# ---------------------------------------------------------------- report.html

def _summary(run_dir: Path, errors: list[str]) -> dict:
    """report.build_summary, with what it cannot rebuild here (training detail needs the checkpoints,
    often not kept) taken from the summary.json that `heal report` wrote."""
    from heal.reporting import build_summary

    try:
        summary = build_summary(run_dir)
    except (StoreError, KeyError, OSError, ValueError, TypeError) as e:
        errors.append(f"the summary could not be rebuilt from the records ({type(e).__name__}: {e}); "
                      f"showing {run_dir / 'summary.json'} as written")
        summary = {"run": str(run_dir), "methods": {}}
    try:
        stored = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    except (OSError, ValueError) as e:
        errors.append(f"{run_dir / 'summary.json'}: not valid JSON ({e})")
        stored = {}
    for k, v in stored.items():
        if v and not summary.get(k):
            summary[k] = v
    summary.setdefault("methods", {})
    return summary


_DATA_COLS = {"D1": "D1", "D2 (PURE)": "D2", "D3 (PURE)": "D3", "D2 raw": "D2raw", "D3 raw": "D3raw", "keep-all": "ALL"}


def _cell_link(head: list[str], row: list[str], j: int, view: str) -> str | None:
    """The view.html address of the records behind one table cell (None: not a count of records)."""
    kind, col, label = head[0], head[j], row[0]
    if kind == "data" and col in _DATA_COLS and label == "examples":  # not "before the cap": those are not kept
        return f"{view}#q=set:{_DATA_COLS[col]}"
    if kind == "set":
        if col in ("examples", "step-verified") or col.startswith("problems ("):
            return f"{view}#q=set{'v' if col == 'step-verified' else ''}:{label}"
        if col.startswith("problems with"):
            return f"{view}#q=setv:{label}"
    if kind == "method" and len(head) > 1:
        if head[1].startswith("stages"):
            return None  # training table: steps and losses, not records
        if head[1] == "all" or col in ("all",):  # paired differences
            tier = "" if col == "all" else f"&tier={col}"
            return f"{view}#eval={label}{tier}" if j >= 1 else None
        if col in ("pass@1", "± se", "n", "greedy"):
            return f"{view}#eval={label}"
        if col.split(" ")[0] in ("solved", "hard", "corner"):
            return f"{view}#eval={label}&tier={col.split(' ')[0]}"
        if col == "verified / correct":
            return f"{view}#eval={label}&ok=1"
        if col in ("answered", "true equations"):
            return f"{view}#eval={label}"
    if kind == "method" and j >= 1:
        return f"{view}#eval={label}"
    return None


# Counts inside the report's sentences, each with the filter that lists its records.
_SENTENCE_LINKS = [
    (r"(\d+) problems x K", "q="), (r"tiers solved (\d+)", "q=tier:solved"), (r"hard (\d+)", "q=tier:hard"),
    (r"corner (\d+)", "q=tier:corner"), (r"(\d+) failed trajectories", "q=repair:any"),
    (r"of (\d+) problems", "q=repair:any"), (r"(\d+) continuations", "q=repair:any"),
    (r"(\d+) answer-correct", "q=repair:correct"), (r"(\d+) derivation-verified", "q=repair:verified"),
    (r"repaired (\d+) \(answer\)", "q=repair:correct"), (r"(\d+) \(verified\)", "q=repair:verified"),
]


def _inline(text: str) -> str:
    t = html.escape(text)
    return re.sub(r"\*([^*]+)\*", r"<i>\1</i>", t)


def _md_to_html(md: str, view: str) -> str:
    """report.markdown's output (headings, sentences, pipe tables) as HTML, with the counts linked."""
    out, lines, i = [], md.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            head, body = block[0], [r for r in block[1:] if not all(set(c) <= {"-"} for c in r)]
            t = ["<table class=report><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head)
                 + "</tr></thead><tbody>"]
            for row in body:
                cells = []
                for j, c in enumerate(row):
                    link = _cell_link(head, row, j, view) if j > 0 and c not in ("-", "") else None
                    cell = f"<a href='{html.escape(link)}'>{_inline(c)}</a>" if link else _inline(c)
                    cells.append(f"<td>{cell}</td>")
                t.append("<tr>" + "".join(cells) + "</tr>")
            out.append("".join(t) + "</tbody></table>")
            continue
        if line.startswith("# "):
            out.append(f"<h1>{_inline(line[2:])}</h1>")
        elif line.startswith("## "):  # a benchmark's tables (eval.benchmarks)
            out.append(f"<h2>{_inline(line[3:])}</h2>")
        elif line.startswith("!["):
            pass  # the PNG plots: report.html draws its own (SVG, linked)
        elif line.strip():
            t = _inline(line)
            for pat, q in _SENTENCE_LINKS:
                t = re.sub(pat, lambda m, q=q: m.group(0).replace(m.group(1), f"<a href='{view}#{q}'>{m.group(1)}</a>", 1),
                           t, count=1)
            out.append(f"<p>{t}</p>")
        i += 1
    return "\n".join(out)


def _svg_bars(title: str, cats: list[str], series: list[tuple[str, list, str]], stacked: bool = False,
              errors: list | None = None, links: list[list[str | None]] | None = None, ylabel: str = "") -> str:
    """A bar chart as inline SVG: grouped or stacked bars, hover titles with the values, and each
    bar a link to its records."""
    W, H, L, B, T = 640, 260, 48, 52, 28
    vals = [[v or 0 for v in s[1]] for s in series]
    top = max([sum(col) for col in zip(*vals)] if stacked else [max(v) for v in vals] or [0])
    if errors:
        top = max(top, max(((v or 0) + (e or 0)) for v, e in zip(vals[0], errors)))
    top = top or 1
    y = lambda v: T + (H - T - B) * (1 - v / top)  # noqa: E731
    gw = (W - L - 10) / max(1, len(cats))
    bw = gw * 0.8 / (1 if stacked else max(1, len(series)))
    g = [f"<svg class=chart viewBox='0 0 {W} {H}' width={W} height={H} role=img><text x={W / 2} y=16 class=ct text-anchor=middle>{html.escape(title)}</text>",
         f"<line x1={L} y1={y(0)} x2={W - 10} y2={y(0)} class=axis />",
         f"<text x={L - 6} y={T + 4} class=tick text-anchor=end>{top:.3g}</text>",
         f"<text x={L - 6} y={y(0)} class=tick text-anchor=end>0</text>",
         f"<text x=12 y={(H - B + T) / 2} class=tick transform='rotate(-90 12 {(H - B + T) / 2})' text-anchor=middle>{html.escape(ylabel)}</text>"]
    for ci, cat in enumerate(cats):
        base = 0.0
        for si, (label, _, color) in enumerate(series):
            v = vals[si][ci]
            x = L + ci * gw + gw * 0.1 + (0 if stacked else si * bw)
            y0, y1 = (y(base + v), y(base)) if stacked else (y(v), y(0))
            raw = series[si][1][ci]
            tip = f"{cat} · {label}: {'-' if raw is None else (f'{raw:.3f}' if isinstance(raw, float) else raw)}"
            rect = (f"<rect x={x:.1f} y={y0:.1f} width={bw:.1f} height={max(0.0, y1 - y0):.1f} fill='{color}'>"
                    f"<title>{html.escape(tip)}</title></rect>")
            link = links[si][ci] if links else None
            g.append(f"<a href='{html.escape(link)}'>{rect}</a>" if link else rect)
            if errors and si == 0 and errors[ci]:
                cx = x + bw / 2
                g.append(f"<line x1={cx:.1f} x2={cx:.1f} y1={y(v + errors[ci]):.1f} y2={y(max(0, v - errors[ci])):.1f} class=err />")
            base += v if stacked else 0
        if ci % max(1, len(cats) // 10) == 0:  # at most ~10 labels: histograms have 20 bins
            g.append(f"<text x={L + ci * gw + gw / 2:.1f} y={H - B + 14} class=tick text-anchor=middle>{html.escape(cat[:14])}</text>")
    for si, (label, _, color) in enumerate(series):
        lx = L + (si % 4) * 150
        ly = H - 18 + (si // 4) * 13
        g.append(f"<rect x={lx} y={ly - 8} width=10 height=10 fill='{color}'/><text x={lx + 14} y={ly + 1} class=tick>{html.escape(label)}</text>")
    return "".join(g) + "</svg>"


_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1"]


def _accuracy_svg(s: dict, title: str, view: str) -> str:
    """pass@1 per method, overall and per teacher tier, of one held-out set's summary `s`."""
    names = list(s["methods"])
    tiers = ["all"] + [t for t in ("solved", "hard", "corner") if t in s.get("test_tiers", {})]
    series = [(t, [s["methods"][n]["pass@1"] if t == "all" else (s["methods"][n].get("per_tier") or {}).get(t)
                   for n in names], _COLORS[i]) for i, t in enumerate(tiers)]
    links = [[f"{view}#eval={n}" + ("" if t == "all" else f"&tier={t}") for n in names] for t in tiers]
    return _svg_bars(title, names, series, errors=[s["methods"][n].get("se") for n in names], links=links, ylabel="pass@1")


def _plots(summary: dict, run_dir: Path, errors: list[str], view: str) -> list[str]:
    """The plots of `heal report` (accuracy, data per stage, rho, repair yield) as linked SVG."""
    out = []
    if summary.get("methods"):
        out.append(_accuracy_svg(summary, "held-out pass@1 per method and teacher tier (bar: ± se)", view))
    for name, bench in (summary.get("benchmarks") or {}).items():  # eval.benchmarks: one chart each
        if bench.get("methods"):
            out.append(_accuracy_svg(bench, f"{name}: pass@1 per method and teacher tier (bar: ± se)", view))
    d = summary.get("data")
    if d and all(k in d for k in ("D1", "D2", "D3", "D2raw", "D3raw")):
        dd = summary.get("data_detail") or {}
        kept = [d["D1"], d["D2"], d["D3"]]
        ver = [dd.get(k, {}).get("verified", 0) for k in ("D1", "D2", "D3")]
        series = [("earlier stages", [0, d["D1"], d["D1"] + d["D2"]], "#c9d6e8"), ("new, step-verified", ver, "#59a14f"),
                  ("new, answer-correct only", [k - v for k, v in zip(kept, ver)], "#f28e2b"),
                  ("rejected by PURE", [0, d["D2raw"] - d["D2"], d["D3raw"] - d["D3"]], "#bbbbbb")]
        links = [[f"{view}#q=set:{s}" for s in ("D1", "D1", "D2")], [f"{view}#q=setv:{s}" for s in ("D1", "D2", "D3")],
                 [f"{view}#q=set:{s}" for s in ("D1", "D2", "D3")], [None, f"{view}#q=set:D2raw pure:rejected",
                                                                     f"{view}#q=set:D3raw pure:rejected"]]
        out.append(_svg_bars("training examples per PACE stage (cumulative)", ["I: D1", "II: +D2", "III: +D3"], series,
                             stacked=True, links=links, ylabel="examples"))
    scored_path = run_dir / "scored.jsonl"
    if scored_path.exists():
        try:
            scored = [r for r in read_jsonl(scored_path) if not r.get("prefilter")]
        except StoreError as e:
            errors.append(str(e))
            scored = []
        for key in ("rho_ans", "rho_step"):
            vals = [(r[key], bool(r.get("derivation_ok"))) for r in scored if r.get(key) is not None]
            if not vals:
                continue
            lo, hi = min(v for v, _ in vals), max(v for v, _ in vals)
            nb = 20
            w = (hi - lo) / nb or 1
            counts = {True: [0] * nb, False: [0] * nb}
            for v, ok in vals:
                counts[ok][min(nb - 1, int((v - lo) / w))] += 1
            cats = [f"{lo + i * w:.2f}" for i in range(nb)]
            out.append(_svg_bars(f"{key} of the scored candidates (prefilter rejects left out)", cats,
                                 [("step-verified", counts[True], "#59a14f"), ("not verified", counts[False], "#e15759")],
                                 stacked=True, ylabel="candidates"))
    r = summary.get("repairs")
    if r:
        out.append(_svg_bars("GEAR repair yield", ["continuations", "answer-correct", "verified"],
                             [("continuations", [r["continuations"], r["answer_correct"], r["derivation_verified"]], "#4e79a7")],
                             links=[[f"{view}#q=repair:any", f"{view}#q=repair:correct", f"{view}#q=repair:verified"]]))
    return out


def render_report(run_dir: str | Path, view_name: str = "view.html") -> str:
    from heal.reporting import markdown

    run_dir = Path(run_dir)
    errors: list[str] = []
    summary = _summary(run_dir, errors)
    try:
        body = _md_to_html(markdown(summary), view_name)
    except (KeyError, TypeError, ValueError) as e:
        errors.append(f"report tables: the summary lacks a field ({type(e).__name__}: {e})")
        body = ""
    try:
        plots = _plots(summary, run_dir, errors, view_name)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        errors.append(f"report plots: {type(e).__name__}: {e}")
        plots = []
    if not body.strip() and not plots:
        body = "<p>Nothing to report yet: no stage summary in this run (run `heal sample` first).</p>"
    err = "".join(f"<div class=error>{html.escape(e)}</div>" for e in errors)
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>heal report: {html.escape(str(run_dir))}</title>"
            f"<style>{VIEW_CSS}{REPORT_CSS}</style></head><body class=reportpage><header><b>heal report</b> "
            f"{html.escape(str(run_dir))} · <a href='{html.escape(view_name)}'>every problem and repair</a></header>"
            f"{err}<article>{body}<h2>Plots</h2><p class=hintline>Hover a bar for its value; click it for its records.</p>"
            f"<div class=plots>{''.join(plots) or '<p>no plots: no stage wrote data for them yet</p>'}</div></article>"
            "<script>document.documentElement.dataset.ready = performance.now().toFixed(1);</script></body></html>\n")


# ---------------------------------------------------------------- styles and script (inline)

VIEW_CSS = """
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;color:#222;background:#fafafa}
header{padding:8px 14px;background:#283845;color:#fff}header a{color:#bde0fe}#run{opacity:.8}
#legend{float:right;font-size:12px}#legend i{display:inline-block;width:34px;height:12px;vertical-align:middle;
background:linear-gradient(90deg,rgba(230,80,40,0),rgba(230,80,40,.85))}
#notes .note,#notes .error,.error{margin:3px 14px;padding:2px 8px;border-radius:4px;font-size:12.5px}
.note{background:#fff6d6;border:1px solid #e8d48a}.error{background:#fde2e1;border:1px solid #e09a97;font-family:monospace;font-size:12px}
body:not(.reportpage){display:flex;flex-direction:column;height:100vh}main{display:flex;flex:1;min-height:0}#list{width:42%;min-width:380px;display:flex;flex-direction:column;border-right:1px solid #ddd}
#filters{padding:8px;background:#fff;border-bottom:1px solid #ddd}#filters input{width:100%;padding:5px;font:inherit}
#filters button{margin:4px 4px 0 0;font-size:12px}#tablewrap{overflow:auto;flex:1}
table{border-collapse:collapse;width:100%;font-size:12px}#problems td{white-space:nowrap}th{position:sticky;top:0;background:#eef1f4;cursor:pointer;text-align:left;
padding:4px 6px;white-space:nowrap}td{padding:3px 6px;border-top:1px solid #eee;vertical-align:top}
#problems tbody tr{cursor:pointer}#problems tbody tr:hover{background:#eef6ff}#problems tr.sel{background:#dbeafe}
#detail{flex:1;overflow:auto;padding:10px 16px}.hintline{color:#777}
.tier{padding:0 5px;border-radius:3px;font-size:11px}.tier-solved{background:#d8f3dc}.tier-hard{background:#ffe8cc}.tier-corner{background:#ffd6d6}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;margin:10px 0;padding:8px 10px}
.card h3,.card h4{margin:2px 0 6px;font-size:14px}.meta{color:#555;font-size:12px}
.trace{font:12.5px/1.6 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-word;background:#fcfcfc;
border:1px solid #eee;padding:6px;max-height:520px;overflow:auto}
.t{border-radius:2px}.kept{box-shadow:inset 0 -2px 0 #59a14f}.dropped{opacity:.45}
.sb{color:#4e79a7;font-size:10px;vertical-align:super;user-select:none;padding:0 2px}
.cut{display:inline-block;width:0;border-left:3px solid #111;height:1.3em;vertical-align:middle;margin:0 2px;position:relative}
.cut::after{content:'cut';position:absolute;top:-1.1em;left:-17px;font-size:9px;line-height:1.2;white-space:nowrap;background:#111;color:#fff;padding:0 2px}
.st{display:block;border-left:3px solid transparent;padding-left:4px;margin:1px 0}.st.breakpoint{outline:none;border-left-color:#e15759}
.breakpoint{outline:2px solid #e15759;outline-offset:-1px}.bpmark{color:#e15759;font-weight:bold;font-size:10px;vertical-align:super}
.hint{background:#ffe066;border:1px dashed #b08900;padding:0 2px}
.step{display:block;border-left:3px solid transparent;padding-left:4px}.false-step{background:#fde2e1;border-left-color:#e15759}
.verdict{font-weight:bold;padding:0 6px;border-radius:3px}.v-right{background:#d8f3dc}.v-wrong{background:#ffd6d6}.v-dup{background:#eee}
.v-verified{background:#b7e4c7}.acc{color:#2b8a3e;font-weight:bold}.rej{color:#c92a2a;font-weight:bold}
button.fold{font:11px system-ui;margin:2px;background:#eef1f4;border:1px solid #ccd;border-radius:3px;cursor:pointer}
details.think>summary{cursor:pointer;color:#6b4ea0}
#tip{position:fixed;display:none;background:#222;color:#fff;font:12px ui-monospace,monospace;padding:4px 6px;border-radius:4px;
pointer-events:none;z-index:10;max-width:420px;white-space:pre-wrap}
svg.ent{display:block;width:100%;max-width:900px;height:70px;background:#fff}
.chart .ct{font:bold 12px system-ui}.chart .tick{font:10px system-ui;fill:#444}.chart .axis{stroke:#888}.chart .err{stroke:#111;stroke-width:1.5}
"""

REPORT_CSS = """
.reportpage article{max-width:1100px;margin:0 auto;padding:10px 20px;background:#fff}
table.report{width:auto;margin:10px 0}table.report th{position:static;cursor:default}table.report td a{text-decoration:none;color:#1c5fb0}
.plots svg{margin:8px 10px 8px 0;border:1px solid #eee;background:#fff}
"""

VIEW_JS = r"""
'use strict';
const $ = (s, el) => (el || document).querySelector(s);
const esc = s => String(s == null ? '' : s).replace(/[&<>"']/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
const island = id => { const el = document.getElementById(id); return el ? JSON.parse(el.textContent) : null; };
const META = island('meta'), ROWS = island('rows'), IDS = island('ids');
const cache = {};  // problem id -> parsed detail (each JSON island is parsed once, when opened)
const SRC = [];    // drawn sources, for the hover tooltip (index = data-src)
const HMAX = 2.0;  // entropy (nats) at full shade
const shade = h => h == null ? '' : `background:rgba(230,80,40,${Math.min(1, h / HMAX) * 0.85})`;
const fmt = (x, d = 3) => x == null ? '-' : (typeof x === 'number' ? x.toFixed(d) : x);

// ---- problem list: filter terms ("tier:corner repair:verified" or free text), sortable columns
const COLS = [['id', 'problem'], ['tier', 'tier'], ['pass', 'pass rate'], ['rep', 'repairs ✓/verified/n'],
              ['pure', 'PURE acc/n'], ['gui', 'guided ✓/verified/n'], ['sets', 'sets']];
let sortKey = 'id', sortDir = 1;
// repairs and guided sort by (right, verified, n); PURE by (accepted, n)
function cellVal(r, k) { const v = r[k]; if (k === 'sets') return v.join(' '); if (k === 'rep' || k === 'gui') return v[1] * 1e6 + v[2] * 1e3 + v[0];
  if (k === 'pure') return v[0] * 1e3 + v[1]; return v == null ? -1 : v; }
function matches(r, terms) {
  return terms.every(t => t.includes(':') ? (' ' + r.tags + ' ').includes(' ' + t + ' ')
                                          : (r.id + ' ' + r.q).toLowerCase().includes(t.toLowerCase()));
}
function drawList() {
  const terms = $('#q').value.trim().split(/\s+/).filter(Boolean);
  const rows = ROWS.filter(r => matches(r, terms)).sort((a, b) => { const x = cellVal(a, sortKey), y = cellVal(b, sortKey);
    return (x < y ? -1 : x > y ? 1 : 0) * sortDir; });
  const cur = params().get('p');
  const trip = v => `${v[1]}/${v[2]}/${v[0]}`;
  const body = rows.map(r => `<tr data-id="${esc(r.id)}"${r.id === cur ? ' class=sel' : ''}><td>${esc(r.id)}</td>` +
    `<td><span class="tier tier-${esc(r.tier)}">${esc(r.tier || '-')}</span></td><td>${fmt(r.pass, 2)} (${r.k})</td>` +
    `<td>${r.rep[0] ? trip(r.rep) : ''}</td><td>${r.pure[1] ? r.pure[0] + '/' + r.pure[1] : ''}</td>` +
    `<td>${r.gui[0] ? trip(r.gui) : ''}</td><td>${esc(r.sets.join(' '))}</td></tr>`).join('');
  $('#problems').innerHTML = '<thead><tr>' + COLS.map(([k, t]) => `<th data-k="${k}">${t}${k === sortKey ? (sortDir > 0 ? ' ▲' : ' ▼') : ''}</th>`).join('') +
    `</tr></thead><tbody>${body}</tbody>`;
  $('#count').textContent = `${rows.length} of ${ROWS.length} problems`;
}

// ---- folding: draw everything when short, else windows around the points that matter
function plan(n, focus, radius, limit) {
  if (n <= limit) return [[0, n, true]];
  const keep = [[0, radius], [n - radius, n]].concat(focus.filter(f => f != null && f >= 0).map(f => [f - radius, f + radius]))
    .map(([a, b]) => [Math.max(0, a), Math.min(n, b)]).sort((x, y) => x[0] - y[0]);
  const merged = [];
  for (const [a, b] of keep) { if (merged.length && a <= merged[merged.length - 1][1]) merged[merged.length - 1][1] = Math.max(merged[merged.length - 1][1], b); else merged.push([a, b]); }
  const out = []; let pos = 0;
  for (const [a, b] of merged) { if (a > pos) out.push([pos, a, false]); out.push([a, b, true]); pos = b; }
  if (pos < n) out.push([pos, n, false]);
  return out;
}
const foldBtn = (kind, a, b, what) => `<button class=fold data-kind="${kind}" data-a=${a} data-b=${b}>… ${b - a} ${what} folded: show</button>`;

// ---- a source trajectory with per-token text: tokens shaded by entropy, steps, breakpoint, cut
function tokenHTML(s, a, b) {
  const out = [], bpTok = s.bp.token, starts = s.stepStart;
  for (let i = a; i < b; i++) {
    if (starts.has(i)) out.push(`<span class=sb>¶${starts.get(i)}</span>`);
    if (i === s.cut) out.push('<span class=cut title="cut: the kept prefix ends here"></span>');
    if (i === bpTok) out.push('<span class=bpmark>▼breakpoint</span>');
    const cls = 't ' + (i < s.cut ? 'kept' : 'dropped') + (i === bpTok ? ' breakpoint' : '');
    out.push(`<span class="${cls}" data-i=${i} style="${shade(s.ent[i])}">${esc(s.pieces[i])}</span>`);
  }
  if (b === s.n && s.cut === s.n) out.push('<span class=cut></span>');
  return out.join('');
}
function drawTokens(s, si) {
  s.stepStart = new Map(s.steps.map(([a], k) => [a, k]));
  return plan(s.n, [s.bp.token, s.cut], 400, 3000).map(([a, b, vis]) =>
    vis ? tokenHTML(s, a, b) : foldBtn('tok', a, b, 'tokens')).join('');
}
// ---- without a tokenizer: the text split into steps, each shaded by its mean entropy
function drawTextSteps(s) {
  const parts = [], cut = s.cut_char;
  s.csteps.forEach(([a, b], k) => {
    const h = s.step_h[k], isBp = s.bp.mode === 'step' && k === s.bp.step && !s.approx;
    let seg = '';
    const piece = (x, y) => y > x ? `<span class="${y <= cut ? 'kept' : 'dropped'}">${esc(s.text.slice(x, y))}</span>` : '';
    if (cut > a && cut < b) seg = piece(a, cut) + '<span class=cut></span>' + piece(cut, b);
    else seg = (cut === a ? '<span class=cut></span>' : '') + piece(a, b);
    parts.push(`<span class="st${isBp ? ' breakpoint' : ''}" data-k=${k} style="${shade(h)}"><span class=sb>¶${k}</span>${isBp ? '<span class=bpmark>▼breakpoint</span>' : ''}${seg}</span>`);
  });
  if (cut >= s.text.length && cut > 0) parts.push('<span class=cut></span>');
  return parts.join('');
}
// the token entropy as a curve (at most 900 points: the maximum of each bucket), the kept prefix
// shaded, the breakpoint (red) and the cut (black) marked
function entSVG(s) {
  const n = s.ent.length; if (!n) return '';
  const W = 900, H = 70, nb = Math.min(n, W), per = n / nb; let top = 0, pts = [];
  for (let j = 0; j < nb; j++) { let m = 0; for (let i = Math.floor(j * per); i < Math.max(Math.floor((j + 1) * per), Math.floor(j * per) + 1); i++) m = Math.max(m, s.ent[i] || 0); pts.push(m); top = Math.max(top, m); }
  top = top || 1;
  const X = i => (i / n * W).toFixed(1), path = pts.map((v, j) => `${(j / nb * W).toFixed(1)},${(H - 4 - v / top * (H - 10)).toFixed(1)}`).join(' ');
  return `<svg class=ent viewBox="0 0 ${W} ${H}" preserveAspectRatio=none><rect x=0 y=0 width=${X(s.cut)} height=${H} fill="rgba(89,161,79,.15)"/>` +
    s.steps.map(([a]) => `<line x1=${X(a)} x2=${X(a)} y1=0 y2=${H} stroke="#dde" />`).join('') +
    `<polyline points="${path}" fill=none stroke="#777" stroke-width=1 /><line x1=${X(s.bp.token)} x2=${X(s.bp.token)} y1=0 y2=${H} stroke="#e15759" stroke-width=2 />` +
    `<line x1=${X(s.cut)} x2=${X(s.cut)} y1=0 y2=${H} stroke="#111" stroke-dasharray="4 2" stroke-width=1.5 />` +
    `<text x=4 y=11 font-size=10>token entropy (max ${top.toFixed(2)} nats), ${n} tokens</text></svg>`;
}

// ---- plain text (continuations, guided and Stage 0 samples): steps, the first false step, folds
function stepHTML(text, a, b, k, isFalse) {
  const body = b - a > 4000 ? esc(text.slice(a, a + 1500)) + foldBtn('chr', a + 1500, b - 1500, 'characters') + esc(text.slice(b - 1500, b)) : esc(text.slice(a, b));
  return `<span class="step${isFalse ? ' false-step' : ''}" data-k=${k}${isFalse ? ' title="first false step"' : ''}>${body}</span>`;
}
function drawText(text, csteps, falseStep) {
  // a reasoning block (<think>...</think>) is folded and drawn only when opened
  const t0 = text.indexOf('<think>'), t1 = text.indexOf('</think>');
  const n = csteps.length;
  const inThink = (k) => t0 >= 0 && t1 > t0 && csteps[k][0] >= t0 && csteps[k][1] <= t1 + 8 && k !== falseStep;
  const segs = plan(n, [falseStep], 3, 60);
  const out = []; let thinkOpen = false, thinkBuf = [];
  const flushThink = () => { if (thinkBuf.length) out.push(`<details class=think data-a=${thinkBuf[0]} data-b=${thinkBuf[thinkBuf.length - 1] + 1}><summary>reasoning block (${thinkBuf.length} steps): show</summary></details>`); thinkBuf = []; };
  for (const [a, b, vis] of segs) {
    if (!vis) { flushThink(); out.push(foldBtn('stp', a, b, 'steps')); continue; }
    for (let k = a; k < b; k++) { if (inThink(k)) { thinkBuf.push(k); continue; } flushThink(); out.push(stepHTML(text, csteps[k][0], csteps[k][1], k, k === falseStep)); }
  }
  flushThink();
  return `<div class=trace data-text>${out.join('')}</div>`;
}

function verdictHTML(c) {
  const cls = c.dup ? 'dup' : c.ok ? 'verified' : c.correct ? 'right' : 'wrong';
  const label = c.dup ? 'duplicate' : c.ok ? 'right, derivation verified' : c.correct ? 'right answer' : 'wrong answer';
  return `<span class="verdict v-${cls}">${label}</span>`;
}
function pureHTML(p) {
  if (!p) return '<span class=meta>PURE: not scored</span>';
  const sc = p.value;
  return `PURE: <span class=${p.accepted ? 'acc' : 'rej'}>${p.accepted ? 'accepted' : 'rejected'}</span> ` +
    `<span class=meta>${esc(p.score)} ${fmt(sc)} ${sc != null && p.threshold != null ? (sc <= p.threshold ? '≤' : '>') : 'vs'} threshold ${fmt(p.threshold, 2)}` +
    ` · rho_ans ${fmt(p.rho_ans)} · rho_step ${fmt(p.rho_step)} · S ${fmt(p.S)} · l_max ${fmt(p.l_max)} · S_ref ${fmt(p.S_ref)}` +
    `${p.accepted ? '' : ' · ' + esc(p.reason)}</span>`;
}
function checkHTML(c) {
  if (!c.check) return '<span class=meta>step check: none</span>';
  const where = c.false_where === 'prefix' ? ` (in the kept prefix, step ${c.false_step})` : c.false_where ? ` (continuation step ${c.false_step}, highlighted)` : '';
  return `step check: <b>${c.check.ok ? 'verified' : 'not verified'}</b> <span class=meta>${esc(c.check.reason)}${where}</span>` +
    (c.check.first_false ? ` <code class=first-false>${esc(c.check.first_false)}</code>` : '');
}
function candHTML(c, title) {
  return `<div class="card cand" data-key="${esc(c.key)}"><h4>${esc(title)} · answer <code>${esc(c.pred)}</code> ${verdictHTML(c)}` +
    `${c.truncated ? ' <span class=meta>truncated</span>' : ''}</h4><div>${checkHTML(c)}</div><div>${pureHTML(c.pure)}</div>` +
    drawText(c.text, c.csteps, c.false_where === 'continuation' ? c.false_step : null) +
    (c.training_text ? `<details class=train data-key="${esc(c.key)}"><summary class=meta>training text (hint span replaced: ${esc(JSON.stringify(c.replaced_span))})</summary></details>` : '') + '</div>';
}
function sourceHTML(s) {
  const si = SRC.push(s) - 1;
  const bp = s.bp, hs = s.hint_span || [];
  const body = s.pieces ? drawTokens(s, si) : s.text != null ? drawTextSteps(s) : '<p class=meta>(the source sample is not in samples.jsonl)</p>';
  const how = s.pieces ? 'tokens shaded by entropy (hover one)' : 'steps shaded by their mean token entropy (' +
    (s.tokenizer_mismatch ? 'the tokenizer decodes these ids to other text: not the teacher\'s' : 'no tokenizer: see the note at the top') + ')' +
    (s.approx ? '; the cut is placed from the training text (approximate)' : '');
  return `<div class="card source" data-src=${si}><h3>failed trajectory ${esc(s.key)} · wrong answer <code>${esc(s.pred)}</code></h3>` +
    `<div class=meta>window ${esc(s.window)}, back-up ${esc(s.backup)} · ${s.n} tokens, ${s.steps.length} steps · breakpoint: ` +
    `${bp.mode === 'step' ? 'step ' + bp.step : 'token-level fallback'} at token ${bp.token} (surge ${fmt(bp.surge)}) · ` +
    `cut at token ${s.cut} (keeps ${bp.kept_steps} step${bp.kept_steps === 1 ? '' : 's'})${s.restart ? ' · <b>restart</b> (nothing kept)' : ''}</div>` +
    entSVG(s) + `<div class=meta>${how}; <span class=kept>underlined</span>: kept prefix; dimmed: dropped</div>` +
    `<div class="trace tokens" data-src=${si}>${body}</div>` +
    `<div class=card><b>prompt of every continuation</b>: question + kept prefix (${s.cut} tokens) + ` +
    `<span class=hint title="hint span: tokens ${hs[0]}-${hs[1]} of prefix + hint">${esc(s.hint_text)}</span> ` +
    `<span class=meta>hint span: tokens ${hs[0]}-${hs[1]}; in the training text it is ${s.hint_mode === 'reflection' ? 'replaced by the reflection' : s.hint_mode === 'strip' ? 'removed' : 'kept'}</span></div>` +
    s.conts.map(c => candHTML(c, 'continuation ' + c.key.split('/').pop())).join('') + '</div>';
}
function detailHTML(d) {
  const t = d.tier || {};
  const head = `<h2>${esc(d.id)} <span class="tier tier-${esc(t.tier)}">${esc(t.tier || 'no tier')}</span></h2>` +
    `<div class=card><div class=question>${esc(d.question)}</div><div>answer <code>${esc(d.answer)}</code> · teacher Stage 0: ` +
    `${t.correct == null ? '-' : t.correct + '/' + t.n} correct` + (Object.keys(d.sets).length ? ` · training sets: ${Object.entries(d.sets).map(([k, v]) => esc(k) + ' (' + v.length + ')').join(', ')}` : '') + '</div></div>';
  const src = d.sources.length ? '<h3>GEAR repairs</h3>' + d.sources.map(sourceHTML).join('') : `<p class=meta>No GEAR repair of this problem${META.notes.missing.some(m => m[0] === 'repairs.jsonl') ? ' (repairs.jsonl is missing)' : ''}.</p>`;
  const gui = d.guided.length ? '<h3>answer-guided samples</h3>' + d.guided.map(g => candHTML(g, 'guided ' + g.key.split('/').pop())).join('') : '';
  const s0 = d.samples.length ? '<h3>Stage 0 samples</h3>' + d.samples.map((s, i) => `<details class=sample data-i=${i}><summary>${esc(s.key)} · answer <code>${esc(s.pred)}</code> ` +
    `${s.correct ? '<span class="verdict v-right">right</span>' : '<span class="verdict v-wrong">wrong</span>'} · ${s.n} tokens${s.truncated ? ' · truncated' : ''}</summary></details>`).join('') : '';
  return head + src + gui + s0;
}
function openProblem(id) {
  const el = $('#detail');
  if (!(id in IDS)) { el.innerHTML = `<p class=error>problem ${esc(id)} is not in this run</p>`; return; }
  SRC.length = 0;
  const d = cache[id] || (cache[id] = island(IDS[id]));
  el.innerHTML = detailHTML(d); el.scrollTop = 0; el.dataset.problem = id;
  document.querySelectorAll('#problems tr.sel').forEach(r => r.classList.remove('sel'));
  const row = document.querySelector(`#problems tr[data-id="${CSS.escape(id)}"]`); if (row) row.classList.add('sel');
}

// ---- held-out evaluation records (#eval=METHOD&tier=corner&ok=1)
function openEval(p) {
  const E = cache.__evals || (cache.__evals = island('evals'));
  const m = p.get('eval'), tier = p.get('tier'), ok = p.get('ok');
  const models = [...new Set(E.records.map(r => r.model))];
  const recs = E.records.filter(r => (!m || r.model === m) && (!tier || r.tier === tier) && (!ok || r.ok));
  $('#detail').innerHTML = `<h2>held-out evaluation${m ? ': ' + esc(m) : ''}${tier ? ', teacher tier ' + esc(tier) : ''}${ok ? ', derivation verified' : ''}</h2>` +
    (E.records.length ? `<p>${models.map(x => `<a href="#eval=${encodeURIComponent(x)}">${esc(x)}</a>`).join(' · ')}</p>` +
    `<p class=meta>${recs.length} records, ${recs.filter(r => r.correct).length} correct</p><table class=evals><thead><tr><th>method</th><th>problem</th><th>tier</th><th>sample</th><th>answer</th><th>verdict</th><th>step check</th></tr></thead><tbody>` +
    recs.slice(0, 2000).map((r, i) => `<tr><td>${esc(r.model)}</td><td>${esc(r.pid)}</td><td>${esc(r.tier || '-')}</td><td>${esc(r.sample)}</td><td><code>${esc(r.pred)}</code></td>` +
      `<td>${r.correct ? '<span class="verdict v-right">right</span>' : '<span class="verdict v-wrong">wrong</span>'}</td><td class=meta>${esc(typeof r.check === 'string' ? r.check : r.check && r.check.reason)}</td></tr>`).join('') +
    '</tbody></table>' + (recs.length > 2000 ? '<p class=meta>first 2000 shown</p>' : '') : '<p class=meta>No evaluation records in this run (eval/evals.jsonl is missing).</p>');
}

function params() { return new URLSearchParams(location.hash.slice(1)); }
function route() {
  const p = params();
  if (p.has('q') && $('#q').value !== p.get('q')) { $('#q').value = p.get('q'); drawList(); }
  try { if (p.has('eval')) openEval(p); else if (p.get('p')) openProblem(p.get('p')); }
  catch (e) {  // a record the page cannot draw: say which, keep the rest of the page working
    $('#detail').innerHTML = `<div class=error>could not draw ${esc(p.get('p') || 'the evaluation')}: ${esc(e && e.stack || e)}</div>`;
    console.warn(e);
  }
}
function setHash(k, v) { const p = params(); if (k === 'p') p.delete('eval'); if (v) p.set(k, v); else p.delete(k); location.hash = p.toString(); }

function notesHTML(n) {
  const out = [];
  if (n.tokenizer) out.push(`<div class=note>${esc(n.tokenizer)}.</div>`);
  if (n.missing.length) out.push('<div class="note missing">missing (not run yet, or run elsewhere): ' +
    n.missing.map(([file, what, cmd]) => `${esc(what)} (<code>${esc(file)}</code>, written by <code>${esc(cmd)}</code>)`).join(' · ') + '</div>');
  if (n.subruns.length) out.push(`<div class=note>runs inside this directory (view each with <code>heal view</code>): ${n.subruns.map(esc).join(', ')}</div>`);
  for (const e of n.errors) out.push(`<div class=error>malformed: ${esc(e)}</div>`);
  if (n.pure && !n.missing.some(m => m[0] === 'scored.jsonl')) out.push(`<div class=note>PURE verdicts re-applied with the run's config: ${esc(n.pure.score)} ≤ ${n.pure.threshold}${n.pure.verify_steps !== 'none' ? ' and a verified derivation' : ''}.</div>`);
  return out.join('');
}

function init() {
  $('#notes').innerHTML = notesHTML(META.notes);
  $('#legend').innerHTML = `entropy 0 <i></i> ${HMAX}+ nats`;
  const quick = ['tier:corner', 'repair:correct', 'repair:verified', 'pure:accepted', 'pure:rejected', 'guided:verified'];
  $('#filters').innerHTML = `<input id=q placeholder="filter: words of the id or question, or tags like tier:corner repair:verified set:D2" value="">` +
    quick.map(q => `<button data-q="${q}">${q}</button>`).join('') + ` <span id=count class=meta></span>`;
  $('#q').addEventListener('input', () => { drawList(); history.replaceState(null, '', '#' + (() => { const p = params(); p.set('q', $('#q').value); return p.toString(); })()); });
  $('#filters').addEventListener('click', e => { const q = e.target.dataset && e.target.dataset.q; if (q) { $('#q').value = ($('#q').value.includes(q) ? $('#q').value.replace(q, '') : $('#q').value + ' ' + q).trim(); drawList(); } });
  $('#problems').addEventListener('click', e => {
    const th = e.target.closest('th'); if (th) { sortDir = sortKey === th.dataset.k ? -sortDir : 1; sortKey = th.dataset.k; drawList(); return; }
    const tr = e.target.closest('tr[data-id]'); if (tr) setHash('p', tr.dataset.id);
  });
  $('#detail').addEventListener('click', e => {
    const b = e.target.closest('button.fold'); if (!b) return;
    const a = +b.dataset.a, z = +b.dataset.b, card = b.closest('[data-src]'), trace = b.closest('.trace');
    let h = '';
    if (b.dataset.kind === 'tok') h = tokenHTML(SRC[+card.dataset.src], a, z);
    else if (b.dataset.kind === 'chr') { const st = b.closest('.step'); const c = findCand(st); h = esc(c.text.slice(a, z)); }
    else { const c = findCand(trace); h = ''; for (let k = a; k < z; k++) h += stepHTML(c.text, c.csteps[k][0], c.csteps[k][1], k, false); }
    b.insertAdjacentHTML('afterend', h); b.remove();
  });
  // lazily drawn: Stage 0 sample texts, reasoning blocks, training texts
  $('#detail').addEventListener('toggle', e => {
    const d = e.target; if (!d.open || d.dataset.drawn) return; d.dataset.drawn = 1;
    const det = cache[$('#detail').dataset.problem];
    if (d.classList.contains('sample')) { const s = det.samples[+d.dataset.i]; d.insertAdjacentHTML('beforeend', drawText(s.text, textSteps(s.text), null)); }
    else if (d.classList.contains('think')) { const c = findCand(d); let h = ''; for (let k = +d.dataset.a; k < +d.dataset.b; k++) h += stepHTML(c.text, c.csteps[k][0], c.csteps[k][1], k, false); d.insertAdjacentHTML('beforeend', h); }
    else if (d.classList.contains('train')) { const c = findCand(d); d.insertAdjacentHTML('beforeend', `<div class=trace>${esc(c.training_text)}</div>`); }
  }, true);
  $('#detail').addEventListener('mouseover', e => {
    const t = e.target.closest('.t, .st'); const tip = $('#tip');
    if (!t) { tip.style.display = 'none'; return; }
    const s = SRC[+t.closest('[data-src]').dataset.src];
    if (t.classList.contains('t')) { const i = +t.dataset.i; tip.textContent = `token ${i}: ${JSON.stringify(s.pieces[i])}\nentropy ${fmt(s.ent[i])} nats · log-prob ${fmt(s.lp[i])}`; }
    else { const k = +t.dataset.k, sp = s.steps[k]; tip.textContent = `step ${k}: mean entropy ${fmt(s.step_h[k])} nats` + (sp ? ` · tokens ${sp[0]}-${sp[1]}` : ''); }
    tip.style.display = 'block'; tip.style.left = (e.clientX + 12) + 'px'; tip.style.top = (e.clientY + 14) + 'px';
  });
  window.addEventListener('hashchange', route);
  drawList(); route();
  document.documentElement.dataset.ready = performance.now().toFixed(1);  // for the load benchmark
}
// the candidate (continuation or guided sample) a folded element belongs to
function findCand(el) {
  const key = el.closest('.cand') && el.closest('.cand').dataset.key, d = cache[$('#detail').dataset.problem];
  for (const s of d.sources) for (const c of s.conts) if (c.key === key) return c;
  for (const g of d.guided) if (g.key === key) return g;
  const smp = el.closest('details.sample'); if (smp) { const s = d.samples[+smp.dataset.i]; return {text: s.text, csteps: textSteps(s.text)}; }
  return null;
}
// the Python text_steps rule, for Stage 0 samples (their steps are split in the page, when opened)
function textSteps(text) {
  const spans = []; let start = 0, sep = false, content = false, prevNl = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i], nl = ch === '\n';
    sep = sep || (nl && prevNl); content = content || !/\s/.test(ch); prevNl = nl;
    if (sep && content) { spans.push([start, i + 1]); start = i + 1; sep = content = prevNl = false; }
    else if (spans.length && sep && !content) { spans[spans.length - 1][1] = i + 1; start = i + 1; sep = content = prevNl = false; }
  }
  if (start < text.length) { if (content || !spans.length) spans.push([start, text.length]); else spans[spans.length - 1][1] = text.length; }
  return spans;
}
try { init(); } catch (e) {
  // never a blank page: say what failed
  document.body.insertAdjacentHTML('afterbegin', `<div class=error>the page failed to draw: ${esc(e && e.stack || e)}</div>`); throw e;
}
"""
