"""Evaluation (`heal eval`): pass@1 over n samples per held-out problem with its standard error,
greedy accuracy, per teacher tier, and how often correct answers come with a verified derivation;
and the metrics reasoning-model papers report (avg@n, maj@k, unbiased pass@k, mean answer length,
truncation rate).

Held-out problems are checked against the training problems with an n-gram decontamination pass
(8- and 32-grams counted, `eval.ngram` dropped) before anything is generated. The teacher is evaluated the same way (the ceiling reference), and
its pass rate on each test problem gives that problem's tier.

Artifacts: RUN/eval/problems.jsonl (the held-out set), RUN/eval/contamination.json,
RUN/eval/settings.json (the pinned sampling, prompt and verifier), RUN/eval/evals.jsonl (one record
per sample, key "<model name>@<weights>/<problem>/<j|greedy>"), RUN/eval/summary.json. With
`eval.benchmarks`, each benchmark has its own problems, contamination, settings and evals in
RUN/eval/<name>/ (problem ids of two benchmarks may collide: a store per benchmark keeps every key as
it is), and RUN/eval/summary.json is {"benchmarks": {name: that benchmark's summary}}.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heal import reasoning
from heal.config import DataConfig, RunConfig, student_config
from heal.engines.base import SamplingParams, chat_prompt_ids, check_prompts_fit
from heal.problems import benchmark_name, from_config
from heal.rundir import RunMismatch, check_settings, sections, writes_run
from heal.records import EVAL, eval_key, read_records, tier_index, tier_sample
from heal.runs import Job, dispatch, generate, local_engine, merge_shards, stable_seed, tier_of
from heal.stepcheck import check_steps, equations
from heal.store import JsonlStore, atomic_write_jsonl, atomic_write_text, read_jsonl
from heal.verify import Verifier, check_gold, choice_letter


TEACHER = "teacher"  # the teacher's name in eval records


def pass_at_1(correct_by_problem: dict[str, list[bool | None]]) -> dict:
    """Mean over problems of the per-problem mean accuracy over its n samples. The standard error
    is over problems (std of the per-problem means / sqrt(P)): samples of one problem are not
    independent draws of the benchmark. A verifier error counts as wrong."""
    per = [float(np.mean([c is True for c in cs])) for cs in correct_by_problem.values() if cs]
    if not per:
        return {"pass@1": None, "se": None, "problems": 0, "n": 0}
    se = float(np.std(per, ddof=1) / math.sqrt(len(per))) if len(per) > 1 else None
    n = Counter(len(cs) for cs in correct_by_problem.values())
    return {"pass@1": float(np.mean(per)), "se": se, "problems": len(per), "n": n.most_common(1)[0][0]}


def paired_difference(a: dict[str, list[bool | None]], b: dict[str, list[bool | None]]) -> dict:
    """pass@1(a) - pass@1(b) over the problems both answered, with the paired standard error (std of
    the per-problem differences / sqrt(P)). Two models on the same problems share the problems'
    difficulty, so this SE is much smaller than combining the two unpaired ones."""
    common = [p for p in a if p in b and a[p] and b[p]]
    d = [float(np.mean([c is True for c in a[p]])) - float(np.mean([c is True for c in b[p]])) for p in common]
    if not d:
        return {"diff": None, "se": None, "problems": 0}
    se = float(np.std(d, ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None
    return {"diff": float(np.mean(d)), "se": se, "problems": len(d)}


def holm(ps: list[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1), in the input order: for reporting
    several contrasts at once."""
    order = np.argsort(ps)
    adj, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        adj[i] = running
    return adj


def _mean_se(per: list[float]) -> tuple[float | None, float | None]:
    """Mean over problems and its standard error (std(ddof=1) / sqrt(P); None for one problem)."""
    if not per:
        return None, None
    return float(np.mean(per)), float(np.std(per, ddof=1) / math.sqrt(len(per))) if len(per) > 1 else None


def avg_at_n(correct_by_problem: dict[str, list[bool | None]]) -> dict:
    """avg@n as reasoning-model papers report it ("pass@1 averaged over n samples"): the same mean as
    pass_at_1, named with its n (the most common sample count) so a table says how many samples it
    averages; the standard error is over problems."""
    r = pass_at_1(correct_by_problem)
    return {"n": r["n"], "mean": r["pass@1"], "se": r["se"], "problems": r["problems"]}


def pass_at_k_estimate(n: int, c: int, k: int) -> float:
    """Chen et al. (2021)'s unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k),
    computed as 1 - prod_{i=n-c+1..n} (1 - k/i), which never forms the binomials (C(64, 32) is 1.8e18;
    at n in the hundreds they overflow a float)."""
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 < k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k(correct_by_problem: dict[str, list[bool | None]], k: int) -> dict:
    """Mean over problems of the unbiased pass@k estimate, with its standard error over problems.
    Problems with fewer than k samples are left out (counted in `problems`). A verifier error is wrong."""
    per = [pass_at_k_estimate(len(cs), sum(c is True for c in cs), k) for cs in correct_by_problem.values() if len(cs) >= k]
    mean, se = _mean_se(per)
    return {"mean": mean, "se": se, "problems": len(per)}


def pass_at_k_ks(n: int) -> list[int]:
    """The k reported for n samples: the powers of two up to n, and n itself (1, 2, 4, ..., 64)."""
    ks = [2**i for i in range(n.bit_length()) if 2**i <= n]
    return ks + ([n] if n not in ks else [])


_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_LATEX_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")


def normalize_answer(pred: str) -> str:
    """The string majority voting compares: LaTeX spacing, sizing and text wrappers, `$`, a final full
    stop and thousands separators removed, \\dfrac / \\tfrac as \\frac, numbers in one spelling
    ("2.0", "2", "2.00" -> "2"). What this does not merge ("0.5" vs "\\frac{1}{2}") counts as two answers."""
    s = _LATEX_WRAP.sub(r"\1", pred.strip())
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\left|\\right|\\[,;:! ]|\s+|\$", "", s).rstrip(".")
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    try:
        x = float(s)
    except ValueError:
        return s
    return str(int(x)) if x.is_integer() and abs(x) < 2**53 else repr(x)


def majority_correct(answers: list[tuple[str | None, bool | None]]) -> bool:
    """Whether the majority answer of one problem's samples (in sample order) is correct. Every
    answer the verifier accepted is one answer, the gold (they are each verified equal to it); the
    others are compared as normalised strings (`normalize_answer`). No answer casts no vote; a tie
    goes to the answer given first; with no answer at all the vote is wrong."""
    votes: Counter = Counter()
    first: dict = {}
    for i, (pred, correct) in enumerate(answers):
        if pred is None:
            continue
        key = True if correct is True else normalize_answer(pred)
        votes[key] += 1
        first.setdefault(key, i)
    if not votes:
        return False
    winner = max(votes, key=lambda a: (votes[a], -first[a]))
    return winner is True


def maj_at_k(answers_by_problem: dict[str, list[tuple[str | None, bool | None]]], k: int | None = None) -> dict:
    """maj@k (consensus@k): the share of problems whose majority answer over their first k samples
    (all with k=None) is correct, with its standard error over problems. k is the most common number
    of samples voted on."""
    per, sizes = [], Counter()
    for answers in answers_by_problem.values():
        if answers:
            voted = answers[:k] if k else answers
            per.append(float(majority_correct(voted)))
            sizes[len(voted)] += 1
    mean, se = _mean_se(per)
    return {"k": sizes.most_common(1)[0][0] if sizes else 0, "mean": mean, "se": se, "problems": len(per)}


_WORD = re.compile(r"-?\d+(?:\.\d+)?|[a-z]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace(",", ""))


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    if len(words) < n:  # a short question: all of it, or nothing if it is all template
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def contamination(test: list[dict], train: list[dict], n: int = 8, df_max: float = 0.05) -> list[dict]:
    """Test problems that share a word n-gram (numbers are words) with a training question.
    Words found in more than df_max of the training questions are a task's template ("State the
    final answer to the following arithmetic problem") and are removed before n-grams are formed,
    so a shared n-gram is n shared content words in a row: the template plus one shared number is
    not contamination. An exact question match always is."""
    train_words = [_words(p["question"]) for p in train]
    df = Counter(w for words in train_words for w in set(words))
    limit = max(1, int(df_max * len(train)))
    content = lambda words: [w for w in words if df[w] <= limit]  # noqa: E731
    index: dict[tuple, str] = {}
    for p, words in zip(train, train_words):
        for g in _ngrams(content(words), n):
            index.setdefault(g, p["id"])
    questions = {" ".join(words): p["id"] for p, words in zip(train, train_words)}
    hits = []
    for p in test:
        words = _words(p["question"])
        if " ".join(words) in questions:
            hits.append({"test_id": p["id"], "train_id": questions[" ".join(words)], "ngram": "exact match"})
            continue
        for g in _ngrams(content(words), n):
            if g in index:
                hits.append({"test_id": p["id"], "train_id": index[g], "ngram": " ".join(g)})
                break
    return hits


REPORTED_NGRAMS = (8, 32)  # open-r1 decontaminates at 8-grams, Light-R1 reports 32-grams


def contamination_report(test: list[dict], train: list[dict], ngram: int, df_max: float, source: str) -> dict:
    """eval/contamination.json: the hits at `ngram` (the problems dropped) and, per benchmark, how many
    test problems share an 8-gram and a 32-gram with the training problems (the two sizes papers
    report), counted the same way (template words removed, a shorter question compared whole)."""
    by_ngram = {}
    for n in sorted({ngram, *REPORTED_NGRAMS}):
        hits = contamination(test, train, n, df_max)
        by_ngram[str(n)] = {"contaminated": len(hits), "rate": len(hits) / len(test) if test else None, "hits": hits}
    hits = by_ngram[str(ngram)]["hits"]
    return {"benchmark": benchmark_name(source), "source": source, "test": len(test), "train": len(train),
            "ngram": ngram, "df_max": df_max, "dropped": len({h["test_id"] for h in hits}), "hits": hits,
            "by_ngram": by_ngram}


@dataclass(frozen=True)
class Benchmark:
    """One held-out set as `heal eval` runs it: its problems' source, n, greedy, and its folder."""

    name: str | None  # None: the single `eval.data` set (no eval.benchmarks), kept in RUN/eval/ itself
    data: DataConfig
    n_samples: int
    greedy: bool
    dir: Path  # RUN/eval/ (the single set) or RUN/eval/<name>/
    tier_samples: int = 0  # teacher samples that only set the tiers (eval.tier_samples)

    @property
    def field(self) -> str:
        """The config field its problems come from (named in errors)."""
        return "eval.data" if self.name is None else f"eval.benchmarks.{self.name}.data"

    @property
    def store(self) -> Path:
        return self.dir / "evals.jsonl"


def single_set(cfg: RunConfig) -> Benchmark:
    """The one held-out set `eval.data` of a config without eval.benchmarks (today's layout)."""
    ec = cfg.eval
    return Benchmark(None, ec.data, ec.n_samples, ec.greedy, Path(cfg.output_dir) / "eval", ec.tier_samples)


def eval_benchmarks(cfg: RunConfig) -> list[Benchmark]:
    """The held-out sets of a run: each of eval.benchmarks (its n and greedy defaulting to eval's) in
    RUN/eval/<name>/, or, with none configured, the single set eval.data in RUN/eval/."""
    ec = cfg.eval
    if not ec.benchmarks:
        return [single_set(cfg)]
    return [Benchmark(name, b.data, ec.n_samples if b.n_samples is None else b.n_samples,
                      ec.greedy if b.greedy is None else b.greedy, Path(cfg.output_dir) / "eval" / name,
                      ec.tier_samples if b.tier_samples is None else b.tier_samples)
            for name, b in ec.benchmarks.items()]


def held_out_problems(cfg: RunConfig, log=print, bench: Benchmark | None = None) -> list[dict]:
    """The eval set of one benchmark (default: the single set eval.data), decontaminated against the
    run's training problems (contaminated ones dropped).

    Built from the benchmark's data every time (cheap next to generation) and compared with the stored
    set: the same set is reused; changed data replaces a set nothing was evaluated on yet and is
    refused once eval records exist (they answer the old questions, perhaps under the same ids)."""
    bench = bench or single_set(cfg)
    run_dir = Path(cfg.output_dir)
    path = bench.dir / "problems.jsonl"
    skipped: list[str] = []
    test = from_config(bench.data, skipped=skipped)
    test = [p.to_dict() for p in check_gold(test, cfg.verify.method, cfg.verify.timeout_s, bench.data.on_error, skipped)]
    for msg in skipped[:20]:
        log(f"eval: skipped {msg}")
    if not (run_dir / "problems.jsonl").exists():
        raise FileNotFoundError(f"{run_dir / 'problems.jsonl'} is missing: held-out problems are checked against "
                                f"the training problems, so run `heal sample` first")
    train = list(read_jsonl(run_dir / "problems.jsonl"))
    report = contamination_report(test, train, cfg.eval.ngram, cfg.eval.df_max, bench.data.source)
    bad = {h["test_id"] for h in report["hits"]}
    kept = [p for p in test if p["id"] not in bad]
    if not kept:
        raise ValueError(f"every held-out problem of {bench.field} overlaps the training problems; choose another {bench.field}")
    if path.exists():
        old = list(read_jsonl(path))
        ident = lambda rows: [(r["id"], r["question"], r["answer"]) for r in rows]  # noqa: E731
        if ident(old) == ident(kept):
            # The same set: its report is rewritten, so a run from before the 32-gram count gets it.
            atomic_write_text(bench.dir / "contamination.json", json.dumps(report, indent=2) + "\n")
            return old
        if bench.store.exists() and bench.store.stat().st_size > 0:
            raise RunMismatch(f"{path} holds another held-out set than {bench.field} gives now ({len(old)} problems "
                              f"stored, {len(kept)} now) and {bench.store} has answers to the stored one; use another "
                              f"output_dir, or delete {bench.dir} to evaluate on the new set")
        log(f"eval: {bench.field} changed and nothing was evaluated yet: replacing {path}")
    atomic_write_text(bench.dir / "contamination.json", json.dumps(report, indent=2) + "\n")
    counts = ", ".join(f"{n}-gram overlap: {c['contaminated']}" for n, c in report["by_ngram"].items())
    log(f"eval: {bench.name or report['benchmark']}: {len(test)} held-out problems ({counts}), {len(bad)} dropped as "
        f"contaminated ({cfg.eval.ngram}-grams), {len(kept)} kept")
    atomic_write_jsonl(path, kept)
    return kept


def pin_eval_settings(cfg: RunConfig, bench: Benchmark | None = None) -> None:
    """Eval records are reused by key (model, weights, problem, sample index), so the settings that
    decide what a record holds (sampling, prompt, verifier) are pinned in the benchmark's settings.json
    (default: eval/settings.json) with its first evaluation; later settings that differ are refused
    instead of mixing old and new answers."""
    bench = bench or single_set(cfg)
    check_settings(bench.dir / "settings.json", sections(cfg, ("sampling", "prompt", "verify")), bench.store,
                   "evaluated")


def model_tag(path: str) -> str:
    """Which weights a name stands for: a retrained checkpoint gets new eval records. The stage's
    fingerprint (its inputs) and its training's id (stages trained before heal recorded one: the
    fingerprint alone); weights rebuilt from the stage's adapter keep both."""
    meta = Path(path) / "heal_stage.json"
    if meta.exists():
        record = json.loads(meta.read_text())
        fingerprint, trained = record.get("fingerprint") or "ckpt", record.get("trained_id")
        return f"{fingerprint}.{trained[:12]}" if trained else fingerprint
    return "base"


def pending_jobs(cfg: RunConfig, name: str, tag: str, problems: list[dict], store: JsonlStore,
                 bench: Benchmark | None = None) -> list[tuple]:
    """(problem, sample index, "greedy" or a tier sample) pairs of one benchmark (default: the single
    set) not yet in its eval store for these weights. Only the teacher draws tier samples."""
    bench = bench or single_set(cfg)
    tiers = [tier_sample(j) for j in range(bench.tier_samples)] if name == TEACHER else []
    return [(p, j) for p in problems for j in list(range(bench.n_samples)) + (["greedy"] if bench.greedy else []) + tiers
            if eval_key(name, tag, p["id"], j) not in store]


def evaluate_model(cfg: RunConfig, name: str, engine, problems: list[dict], progress: bool = True,
                   tag: str = "base", reasoning_cfg=None, bench: Benchmark | None = None, model_cfg=None,
                   log=print) -> None:
    """n sampled answers (and one greedy) per problem of one benchmark (default: the single set) from
    `engine` (or, under a Ray launcher, from workers that build `model_cfg`), verified and
    step-checked. `reasoning_cfg`: the model's reasoning format (its prompt's template arguments;
    the answer is read after the reasoning block)."""
    bench = bench or single_set(cfg)
    merge_shards(bench.dir, [bench.store.name], log)
    items = [{"problem_id": p["id"], "problem": p, "j": j, "model": name, "tag": tag,
              "reasoning": reasoning_cfg.model_dump(mode="json") if reasoning_cfg is not None else None,
              "bench": bench.name}
             for p, j in pending_jobs(cfg, name, tag, problems, JsonlStore(bench.store), bench)]
    dispatch(cfg, model_cfg, eval_work, items, bench.dir, (bench.store.name,), engine=engine, progress=progress, log=log)


def eval_seed(seed: int, problem_id: str, j: int | str) -> int:
    """The sampling seed of one answer: the problem's eval seed + j for scored samples; + 1000 + j for
    tier sample j, so tiers never come from the samples that score the teacher."""
    base = stable_seed(seed, "eval", problem_id)
    t = tier_index(j)
    return base + (0 if j == "greedy" else 1000 + t if t is not None else j)


def eval_work(cfg: RunConfig, engine, items: list[dict], stores: dict[str, JsonlStore], progress: bool) -> None:
    """One answer per item (a problem and a sample index, or "greedy"), verified and step-checked."""
    from heal.config import ReasoningConfig

    s = cfg.sampling
    sampled = SamplingParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                             max_new_tokens=s.max_new_tokens, seed=s.seed)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=s.max_new_tokens)
    first = items[0]
    rc = first["reasoning"]
    fmt = reasoning.resolve(ReasoningConfig.model_validate(rc) if rc is not None else None, engine.tokenizer)
    prompt_ids = {it["problem_id"]: chat_prompt_ids(engine.tokenizer, cfg.prompt.template.format(question=it["problem"]["question"]),
                                                    cfg.prompt.system, fmt.template_kwargs) for it in items}
    check_prompts_fit(engine, list(prompt_ids.items()), s.max_new_tokens)
    # sampled answers first, then the greedy ones (a chunk shares its sampling params)
    order = sorted(items, key=lambda it: it["j"] == "greedy")
    jobs = [Job(prompt_ids[it["problem_id"]], eval_seed(s.seed, it["problem_id"], it["j"]), it,
                greedy if it["j"] == "greedy" else sampled) for it in order]

    def build(job: Job, comps) -> list[dict]:
        it, [c] = job.data, comps
        p = it["problem"]
        v = verifier.check(reasoning.answer_text(c.text, fmt) or "", p["answer"], p.get("meta"))
        if (p.get("meta") or {}).get("answer_kind") == "choice":
            # a multiple-choice answer has no arithmetic derivation to check: neither verified nor not
            ok, why = None, "not applicable (multiple choice)"
        else:
            chk = check_steps([c.text], p["answer"], p["question"])
            ok, why = bool(v.correct) and chk.ok, chk.reason
        return [{"key": eval_key(it["model"], it["tag"], p["id"], it["j"]), "model": it["model"], "tag": it["tag"],
                 "problem_id": p["id"], "sample": it["j"], "text": c.text, "n_tokens": len(c.token_ids),
                 "truncated": c.truncated, "pred": v.pred, "correct": v.correct,
                 "verify_error": v.error, "derivation_ok": ok, "step_check": why}]

    desc = f"eval {first['model']}" + (f" on {first['bench']}" if first["bench"] else "")
    with Verifier(cfg.verify.method, cfg.verify.timeout_s) as verifier:
        generate(engine, jobs, sampled, build, stores[next(iter(stores))], desc=desc, unit="sample", progress=progress)


def reasoning_metrics(sampled: list[dict], choice_ids: frozenset[str] = frozenset()) -> dict:
    """The metrics reasoning-model papers report, over one model's sampled answers (eval records, no
    greedy one): avg@n, maj@k with k = n, the unbiased pass@k for k = 1, 2, 4, ..., n, the mean answer
    length in tokens and the share of answers cut off by max_new_tokens. On the multiple-choice
    problems (`choice_ids`) votes go to the option letter an answer names ("(A)" and "A" are one vote)."""
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(sampled, key=lambda r: r["sample"]):  # sample order: maj@k's tie-break
        by_problem[r["problem_id"]].append(r)
    correct = {p: [r["correct"] for r in rs] for p, rs in by_problem.items()}
    n = avg_at_n(correct)["n"]
    lengths = [r["n_tokens"] for r in sampled if r.get("n_tokens") is not None]
    return {
        "avg@n": avg_at_n(correct),
        "maj@k": maj_at_k({p: [(_vote(r.get("pred"), p in choice_ids), r["correct"]) for r in rs]
                           for p, rs in by_problem.items()}),
        "pass@k": {str(k): pass_at_k(correct, k) for k in pass_at_k_ks(n)} if n else {},
        "mean_tokens": float(np.mean(lengths)) if lengths else None,
        "truncation_rate_sampled": float(np.mean([bool(r["truncated"]) for r in sampled])) if sampled else None,
    }


def _vote(pred: str | None, choice: bool) -> str | None:
    """What an answer votes for: its option letter on a multiple-choice problem (when it names one)."""
    return (choice_letter(pred) or pred) if choice and pred is not None else pred


def summarize_eval(cfg: RunConfig, teacher_name: str = TEACHER, tags: dict[str, str] | None = None,
                   baselines: tuple[str, ...] = ("sft_rs", "heal")) -> dict:
    """RUN/eval/summary.json: the single set's summary (summarize_benchmark), or, with eval.benchmarks,
    {"benchmarks": {name: the same summary of that benchmark}}."""
    benches = eval_benchmarks(cfg)
    if benches[0].name is None:
        out = summarize_benchmark(cfg, benches[0], teacher_name, tags, baselines)
    else:
        out = {"benchmarks": {b.name: summarize_benchmark(cfg, b, teacher_name, tags, baselines) for b in benches}}
    atomic_write_text(Path(cfg.output_dir) / "eval" / "summary.json", json.dumps(out, indent=2) + "\n")
    return out


def summarize_benchmark(cfg: RunConfig, bench: Benchmark, teacher_name: str = TEACHER,
                        tags: dict[str, str] | None = None, baselines: tuple[str, ...] = ("sft_rs", "heal")) -> dict:
    """One benchmark's summary over its current held-out set, its n, and (with `tags`) the current
    weights: per model pass@1, greedy, per teacher tier, the reasoning-paper metrics. Every model is
    paired with each baseline that was evaluated: SFT-RS (does HEAL's data help?) and HEAL (what does
    each ablation's missing piece cost?)."""
    held_out = list(read_jsonl(bench.dir / "problems.jsonl"))
    current = {p["id"] for p in held_out}
    choice_ids = frozenset(p["id"] for p in held_out if (p.get("meta") or {}).get("answer_kind") == "choice")
    by_model: dict[str, list[dict]] = defaultdict(list)
    tier_recs: list[dict] = []  # the teacher's tier samples (eval.tier_samples): they set the tiers only
    for r in read_records(bench.store, EVAL):
        if r["problem_id"] not in current or (tags is not None and r["model"] in tags and r.get("tag") != tags[r["model"]]):
            continue
        t = tier_index(r["sample"])
        if t is not None:
            if r["model"] == teacher_name and t < bench.tier_samples:
                tier_recs.append(r)
        elif r["sample"] == "greedy" or r["sample"] < bench.n_samples:
            by_model[r["model"]].append(r)
    tiers = teacher_tiers(cfg, tier_recs if bench.tier_samples else by_model.get(teacher_name, []))
    out = {"tiers": dict(Counter(tiers.values())),
           "tiers_from": (f"{bench.tier_samples} teacher samples of their own per problem" if bench.tier_samples
                          else f"the teacher's {bench.n_samples} scored samples"), "models": {}}
    sampled_by_model = {name: _correct_by_problem(rs) for name, rs in by_model.items()}
    for name, rs in by_model.items():
        out["models"][name] = model_summary(rs, sampled_by_model[name], tiers, choice_ids)
    for baseline in [b for b in baselines if b in sampled_by_model]:  # paired over problems
        for name, m in out["models"].items():
            if name != baseline:
                m[f"vs_{baseline}"] = paired_by_tier(sampled_by_model[name], sampled_by_model[baseline], tiers, m["per_tier"])
    return out


def _correct_by_problem(recs: list[dict]) -> dict[str, list[bool | None]]:
    """Problem -> the verdicts of its sampled answers (the greedy one left out; tier samples are
    sampled answers here: teacher_tiers passes only those)."""
    out: dict[str, list] = defaultdict(list)
    for r in recs:
        if r["sample"] != "greedy":
            out[r["problem_id"]].append(r["correct"])
    return out


def teacher_tiers(cfg: RunConfig, teacher_recs: list[dict]) -> dict[str, str]:
    """Tier of each test problem: the teacher's pass rate over `teacher_recs` (its tier samples, or
    its scored samples when there are none), with Stage 0's
    thresholds (corner_max_correct, a count out of Stage 0's K, scaled to the n samples used here)."""
    tiers = {}
    for pid, cs in _correct_by_problem(teacher_recs).items():
        # corner: a pass rate of at most corner_max_correct / K, i.e. at most floor(that x n) of n
        # (round() would round 0.5 down and 1.5 up: 1 of 8 -> 0 of 4 but 3 of 8 -> 2 of 4)
        corner_max = math.floor(cfg.sample.corner_max_correct * len(cs) / cfg.sample.k)
        tiers[pid] = tier_of(sum(c is True for c in cs), len(cs), cfg.sample.solved_min_pass, corner_max)
    return tiers


def model_summary(rs: list[dict], sampled: dict[str, list[bool | None]], tiers: dict[str, str],
                  choice_ids: frozenset[str]) -> dict:
    """One model's entry of a summary, from its records `rs` (sampled and greedy) of one benchmark."""
    texts = [r for r in rs if r["sample"] != "greedy"]
    greedy = [r for r in rs if r["sample"] == "greedy"]
    # the step checker's share, over the correct sampled answers it applies to (none on multiple
    # choice); not the greedy one, which only the teacher may have, so that models compare
    correct = [r for r in texts if r["correct"] is True and r.get("derivation_ok") is not None]
    m = pass_at_1(sampled)
    m["greedy"] = float(np.mean([r["correct"] is True for r in greedy])) if greedy else None
    m["per_tier"] = {t: pass_at_1({p: c for p, c in sampled.items() if tiers.get(p) == t})
                     for t in ("solved", "hard", "corner") if any(tiers.get(p) == t for p in sampled)}
    m["verified_share_of_correct"] = float(np.mean([r["derivation_ok"] for r in correct])) if correct else None
    # Graded signals for students too weak to finish many problems: how often an answer is given
    # at all, and the share of the arithmetic equations they write that are true.
    m["answer_rate"] = float(np.mean([r.get("pred") is not None for r in texts])) if texts else None
    eqs = [e.ok for r in texts for e in equations(r.get("text") or "")]
    m["equations"] = len(eqs)
    m["equation_accuracy"] = float(np.mean(eqs)) if eqs else None
    m["truncation_rate"] = float(np.mean([r["truncated"] for r in rs])) if rs else None  # greedy included
    m.update(reasoning_metrics(texts, choice_ids))
    return m


def paired_by_tier(a: dict[str, list[bool | None]], base: dict[str, list[bool | None]], tiers: dict[str, str],
                   tier_names) -> dict:
    """paired_difference(a, base) over all problems, with the same per teacher tier in `per_tier`."""
    d = paired_difference(a, base)
    d["per_tier"] = {t: paired_difference({p: c for p, c in a.items() if tiers.get(p) == t}, base) for t in tier_names}
    return d


def trained_models(run_dir: Path) -> dict[str, str]:
    """Method -> weights folder from RUN/checkpoints/final.json. Paths are relative to the run directory
    (older runs wrote them relative to the working directory they were trained from: still found)."""
    final = run_dir / "checkpoints" / "final.json"
    if not final.exists():
        return {}
    out = {}
    for name, path in json.loads(final.read_text()).items():
        p = Path(path)
        if not p.is_absolute() and (run_dir / p).exists():
            p = run_dir / p
        if not p.exists():
            raise FileNotFoundError(f"{final}: the weights of {name} ({path}) are missing; train it again "
                                    f"(`heal train --method {name}`) or remove it from {final.name}")
        out[name] = str(p.resolve())
    return out


def student_weights(cfg: RunConfig, path: str, log=print) -> str:
    """What eval.engine loads for a student: its weights folder; with llamacpp, a GGUF of them written
    once into that folder (heal.models.export_gguf at eval.gguf_type; the student alias's GGUF gives
    tokenizer and metadata). The untrained student (an alias) is exported from its transformers
    folder too, so that every student runs at the same precision."""
    if cfg.eval.engine != "llamacpp":
        return path
    from heal.models import export_file, export_gguf, resolve

    hf = resolve(path).hf
    reference = resolve(cfg.train.student).gguf
    if hf is None or reference is None:
        raise ValueError(f"eval.engine llamacpp: {path if hf is None else cfg.train.student} has no "
                         f"{'transformers folder' if hf is None else 'GGUF'} (use a student alias from "
                         "`heal models list` or a folder holding its .gguf); or set eval.engine to hf or vllm")
    out = Path(hf) / export_file(cfg.eval.gguf_type)
    if not out.exists():
        export_gguf(hf, reference, out, log=log, gguf_type=cfg.eval.gguf_type)
    return str(out)


@writes_run("eval")
def run_eval(cfg: RunConfig, models: dict[str, str] | None = None, progress: bool = True, log=print) -> dict:
    """Evaluate the teacher (ceiling, tiers) and every trained model (default: RUN/checkpoints/final.json)
    plus the untrained student as `base`, on every benchmark (eval_benchmarks). Every held-out set is
    built and every settings pin checked before any model loads; each model loads once for all of them."""
    run_dir = Path(cfg.output_dir)
    sets = [(b, held_out_problems(cfg, log, b)) for b in eval_benchmarks(cfg)]
    for b, _ in sets:
        pin_eval_settings(cfg, b)
    if models is None:
        models = {**trained_models(run_dir), "base": cfg.train.student}  # the untrained student last: the least informative
    todo = [(TEACHER, None, TEACHER)] + [(name, path, model_tag(path)) for name, path in models.items()]
    for name, path, tag in todo:
        work = [(b, ps) for b, ps in sets if pending_jobs(cfg, name, tag, ps, JsonlStore(b.store), b)]
        if not work:
            log(f"eval {name}: done, skipping")
            continue  # no model load (its engine need not even be installed here)
        if name != TEACHER and Path(path).is_dir():  # a LoRA run moved without its merged weights
            from heal.pace import ensure_weights

            ensure_weights(Path(path), cfg.train.student, log)
        mc = cfg.teacher if name == TEACHER else student_config(cfg, student_weights(cfg, path, log))
        with local_engine(cfg, mc) as engine:  # one load for every benchmark (None: Ray workers load it)
            for b, ps in work:
                evaluate_model(cfg, name, engine, ps, progress, tag,
                               cfg.teacher.reasoning if name == TEACHER else (cfg.train.reasoning or cfg.teacher.reasoning),
                               b, model_cfg=mc, log=log)
    return summarize_eval(cfg, tags={name: tag for name, _, tag in todo})
