"""What every generating stage shares: per-item seeds, sampling parameters, tiers, Stage 0's
artifacts, the generation loop, and where the work runs.

The loop (`generate`): jobs (a prompt, a seed, the stage's own data) are taken in chunks of the
engine's batch size, generated, turned into records by the stage's `build`, and appended to the
stage's store after each chunk, with one progress bar. An interrupted stage resumes because every
stage lists only the jobs whose records are not in its store, and every job's seed depends on its
key alone (the same record comes out whichever run, worker or chunk draws it).

Where it runs (`dispatch`): `launcher: {kind: local}` runs the stage's work function on one engine in
this process; `launcher: {kind: ray}` splits the work items by problem over Ray actors, one engine
each (per GPU or per node). Each actor appends to its own shard, OUT/shards/<store>.<i>.jsonl (an
append-only store: a killed actor loses at most its unfinished line). When the actors finish, or
fail, the driver merges every shard into the stage's store by key (idempotent) and deletes it; a
re-run after a crash merges first (`merge_shards`), then lists only what is missing. Shards live next
to the store, so on a multi-node cluster `output_dir` must be on a file system every node sees.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tqdm.auto import tqdm

from heal.engines.base import Completion, SamplingParams
from heal.store import JsonlStore, read_store


def stable_seed(base: int, *parts: object) -> int:
    """A per-item seed that does not depend on run order (so a resumed run draws the same samples)."""
    h = hashlib.sha256("/".join([str(base), *map(str, parts)]).encode()).hexdigest()
    return int(h[:8], 16) % (2**31 - 1024)


def sampling_params(cfg) -> SamplingParams:
    """The teacher's sampling settings of a RunConfig as the engines take them."""
    s = cfg.sampling
    return SamplingParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                          max_new_tokens=s.max_new_tokens, seed=s.seed)


def tier_of(n_correct: int, k: int, solved_min_pass: float = 0.5, corner_max_correct: int = 1) -> str:
    """solved: pass rate >= solved_min_pass; corner: at most corner_max_correct correct (and not
    solved, which only matters for tiny K); hard: everything in between."""
    if k > 0 and n_correct / k >= solved_min_pass:
        return "solved"
    if n_correct <= corner_max_correct:
        return "corner"
    return "hard"


def load_stage0(run_dir: str | Path) -> tuple[dict[str, dict], dict[str, list[dict]], dict[str, dict]]:
    """(problems by id, Stage 0 samples by problem id, tier rows by problem id) of a run."""
    from heal.records import PROBLEM, SAMPLE, TIER, read_records

    run_dir = Path(run_dir)
    for name in ("problems.jsonl", "samples.jsonl", "tiers.jsonl"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir / name} is missing: run `heal sample` on this run first")
    problems = {r["id"]: r for r in read_records(run_dir / "problems.jsonl", PROBLEM, store=False)}
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for r in read_records(run_dir / "samples.jsonl", SAMPLE):
        by_problem[r["problem_id"]].append(r)
    tiers = {r["problem_id"]: r for r in read_records(run_dir / "tiers.jsonl", TIER, store=False)}
    return problems, by_problem, tiers


@dataclass
class Job:
    """One prompt to generate from: its ids, the seed of its first completion, and whatever the
    stage's `build` needs to turn the completions into records."""

    prompt_ids: list[int]
    seed: int
    data: Any = None
    params: SamplingParams | None = None  # None: generate()'s params (eval's greedy pass has its own)


@dataclass
class Rate:
    """Generated tokens and records per second since the loop started (the bar's postfix)."""

    t0: float = field(default_factory=time.time)
    tokens: int = 0
    records: int = 0

    def add(self, comps: list[list[Completion]], records: int) -> str:
        self.tokens += sum(len(c.token_ids) for cs in comps for c in cs)
        self.records += records
        dt = max(time.time() - self.t0, 1e-9)
        return f"{self.records / dt:.2f} rec/s, {self.tokens / dt:.1f} tok/s"


def generate(engine, jobs: Iterable[Job], params: SamplingParams, build: Callable[[Job, list[Completion]], list[dict]],
             store: JsonlStore, *, n: int = 1, record_entropy: bool = False, chunk: int | None = None,
             desc: str | None = None, unit: str = "rec", total: int | None = None, progress: bool = False) -> int:
    """Generate n completions per job, in chunks of the engine's batch size (jobs of one chunk share
    sampling params), build each job's records and append them after every chunk. `jobs` may be a
    lazy iterator (GEAR plans a cut, with the engine, just before it generates). Returns how many
    records were appended.

    The progress bar advances by records, with rec/s and tok/s as its postfix. With `desc`, generate
    opens it (`total`: len(jobs) when jobs is a list; shown only if `progress`) and closes it however
    the loop ends; without, there is none."""
    bar = progress_bar(total if total is not None else _len(jobs), 0, desc, unit, progress) if desc is not None else None
    chunk = chunk or max(1, getattr(engine, "batch_size", 1) or 1)
    rate, added = Rate(), 0
    try:
        for batch in _chunks(jobs, chunk):
            p = batch[0].params or params
            comps = engine.generate([j.prompt_ids for j in batch], p, n=n, record_entropy=record_entropy,
                                    seeds=[j.seed for j in batch])
            records = [rec for job, cs in zip(batch, comps) for rec in build(job, cs)]
            store.append(records)
            added += len(records)
            if bar is not None:
                bar.update(len(records))
                bar.set_postfix_str(rate.add(comps, len(records)))
    finally:
        if bar is not None:
            bar.close()
    return added


def _len(jobs: Iterable[Job]) -> int | None:
    return len(jobs) if isinstance(jobs, (list, tuple)) else None  # a lazy iterator has no total


def _chunks(jobs: Iterable[Job], size: int) -> Iterator[list[Job]]:
    batch: list[Job] = []
    for job in jobs:
        if batch and (len(batch) == size or job.params is not batch[0].params):
            yield batch
            batch = []
        batch.append(job)
    if batch:
        yield batch


def progress_bar(total: int, done: int, desc: str, unit: str, progress: bool):
    return tqdm(total=total, initial=done, desc=desc, unit=unit, disable=not progress, dynamic_ncols=True)


# ---- where the work runs ----------------------------------------------------------------------------

# A stage's work function: work(cfg, engine, items, stores, progress) generates the records of `items`
# (plain picklable dicts, each with a "problem_id") into `stores` ({store file name: JsonlStore}). It
# must be a module-level function: Ray ships it to the actors by reference.
Work = Callable[..., Any]


def merge_shards(out_dir: Path, names: Iterable[str], log=print) -> int:
    """Append every shard's records that the stores lack, then delete the shard. Returns how many
    records were added. Safe to repeat at any point (keys make it idempotent)."""
    added = 0
    for name in names:
        stem = name.removesuffix(".jsonl")
        store = JsonlStore(out_dir / name)
        n = 0
        for shard in sorted((out_dir / "shards").glob(f"{stem}.*.jsonl")):
            JsonlStore(shard)  # drops a line a killed worker left half-written
            n += store.append(list(read_store(shard, unpack=False)))  # records as stored (floats packed)
            shard.unlink()
        if n:
            log(f"merged {n} records from worker shards into {store.path}")
        added += n
    return added


@contextmanager
def local_engine(cfg, model_cfg, engine=None):
    """The engine a stage generates with in this process: `engine` if the caller passed one, else one
    built from `model_cfg` and closed when the stage ends; None under `launcher.kind: ray`, where each
    Ray worker builds its own."""
    from heal.engines import engine_for

    if cfg.launcher.kind == "ray":
        yield None
        return
    with engine_for(model_cfg, engine) as eng:
        yield eng


def dispatch(cfg, model_cfg, work: Work, items: list[dict], out_dir: Path, names: tuple[str, ...], *, engine=None,
             total: int | None = None, progress: bool = True, log=print) -> None:
    """Run `work` over `items` on one local engine (`engine` if given, else one built from
    `model_cfg`), or, with `launcher.kind: ray`, sharded by problem over Ray actors that each build
    their own engine from `model_cfg`; their shards are merged into OUT/<names> by key."""
    from heal.engines import engine_for

    if not items:
        return
    stores = {name: JsonlStore(out_dir / name) for name in names}
    if cfg.launcher.kind != "ray":
        with engine_for(model_cfg, engine) as eng:
            work(cfg, eng, items, stores, progress)
        return
    _ray_dispatch(cfg, model_cfg, work, items, out_dir, names, total, progress, log)


class ShardWorker:
    """A Ray actor: one engine, one shard of every store the work writes."""

    def __init__(self, model_cfg):
        self.model_cfg = model_cfg

    def run(self, work: Work, cfg, items: list[dict], shard_paths: dict[str, str]) -> int:
        from heal.engines import engine_for

        stores = {name: JsonlStore(path) for name, path in shard_paths.items()}
        with engine_for(self.model_cfg) as engine:
            work(cfg, engine, items, stores, False)
        return len(items)


def _ray_dispatch(cfg, model_cfg, work: Work, items: list[dict], out_dir: Path, names: tuple[str, ...],
                  total: int | None, progress: bool, log) -> None:
    import ray

    lc = cfg.launcher
    # Shard by problem (round robin), so one problem's items stay on one engine.
    order = list(dict.fromkeys(it["problem_id"] for it in items))
    worker_of = {pid: i % lc.workers for i, pid in enumerate(order)}
    shards = [s for s in ([it for it in items if worker_of[it["problem_id"]] == w] for w in range(lc.workers)) if s]
    log(f"ray: {len(items)} items over {len(shards)} workers")
    started_here = not ray.is_initialized()
    if started_here:
        _ray_init(lc, len(shards))
    Worker = ray.remote(num_cpus=lc.cpus_per_worker, num_gpus=lc.gpus_per_worker)(ShardWorker)
    shard_dir = out_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    paths = [{name: str(shard_dir / f"{name.removesuffix('.jsonl')}.{i}.jsonl") for name in names}
             for i in range(len(shards))]
    actors = [Worker.remote(model_cfg) for _ in shards]
    refs = [a.run.remote(work, cfg, s, p) for a, s, p in zip(actors, shards, paths)]
    first = names[0]
    main = JsonlStore(out_dir / first)
    bar = progress_bar(total or len(items), len(main), f"{first.removesuffix('.jsonl')} (ray)", "rec", progress)
    try:
        pending = list(refs)
        while pending:
            _, pending = ray.wait(pending, timeout=2.0)
            bar.n = len(main) + sum(_count_lines(Path(p[first])) for p in paths)
            bar.refresh()
        ray.get(refs)  # raises a worker's error after everything finished or failed
    finally:
        bar.close()
        merge_shards(out_dir, names, log)  # keep whatever the workers wrote, error or not
        for a in actors:
            ray.kill(a)
        if started_here:
            ray.shutdown()


def _ray_init(lc, workers: int) -> None:
    import ray

    if lc.address:
        ray.init(address=lc.address, log_to_driver=False)
    else:  # a local cluster sized for the workers
        ray.init(num_cpus=max(1, int(round(lc.cpus_per_worker * workers))),
                 num_gpus=int(round(lc.gpus_per_worker * workers)), log_to_driver=False, include_dashboard=False)


@contextmanager
def ray_session(cfg):
    """Under `launcher.kind: ray`, one Ray connection (or local cluster) for a block of stages
    (`heal run`), instead of one per stage; nothing otherwise."""
    if cfg.launcher.kind != "ray":
        yield
        return
    import ray

    if ray.is_initialized():
        yield
        return
    _ray_init(cfg.launcher, cfg.launcher.workers)
    try:
        yield
    finally:
        ray.shutdown()


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def load_tokenizer(model_cfg):
    """The tokenizer of a model config without loading the model (the Ray driver builds prompts)."""
    from transformers import AutoTokenizer

    from heal.models import resolve

    paths = resolve(model_cfg.model)
    if paths.hf:
        return AutoTokenizer.from_pretrained(paths.hf)
    gguf = Path(paths.gguf)
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


__all__ = ["Job", "ShardWorker", "dispatch", "generate", "load_stage0", "local_engine", "load_tokenizer", "merge_shards",
           "progress_bar", "ray_session", "sampling_params", "stable_seed", "tier_of"]
