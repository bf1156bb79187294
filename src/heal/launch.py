"""`launcher: ray`: Stage 0 sharded over Ray actors, one engine per actor (per GPU or per node).

    launcher: {kind: ray, address: auto, workers: 8, gpus_per_worker: 1}

The driver splits the items still missing from RUN/samples.jsonl over `workers` actors, by problem.
Each actor builds its own engine from `teacher` and appends its records to its own shard,
RUN/shards/samples.<i>.jsonl (an append-only store like the main one: a killed actor loses at most
its unfinished line). When the actors finish, or fail, the driver merges every shard into the
main store by key (idempotent: a record already there is skipped) and deletes the shard. A re-run
after a crash first merges what the shards hold, then redoes only the missing items. Because every
sample's seed depends only on its problem and index, the samples do not depend on the sharding.

Shards live in the run directory, so on a multi-node cluster `output_dir` must be on a file system
every node sees (NFS, a mounted bucket); docs/scale.md.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm.auto import tqdm

from heal.config import RunConfig, echo_config
from heal.problems import Problem
from heal.store import JsonlStore, read_store


def merge_shards(run_dir: Path, store: JsonlStore, log=print) -> int:
    """Append every shard's records that the main store lacks, then delete the shard. Returns how
    many records were added. Safe to repeat at any point (keys make it idempotent)."""
    added = 0
    for shard in sorted((run_dir / "shards").glob("samples.*.jsonl")):
        JsonlStore(shard)  # drops a line a killed worker left half-written
        added += store.append(list(read_store(shard, unpack=False)))  # records as stored (floats packed)
        shard.unlink()
    if added:
        log(f"merged {added} samples from worker shards into {store.path}")
    return added


def _load_tokenizer(model_cfg):
    from transformers import AutoTokenizer

    from heal.models import resolve

    paths = resolve(model_cfg.model)
    if paths.hf:
        return AutoTokenizer.from_pretrained(paths.hf)
    gguf = Path(paths.gguf)
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


class ShardWorker:
    """A Ray actor: one engine, one shard of the store."""

    def __init__(self, cfg_json: dict):
        self.cfg = RunConfig.model_validate(cfg_json)

    def run(self, items: list[tuple[dict, int]], shard_path: str) -> int:
        from heal.engines import engine_for
        from heal.sample import sample_items

        store = JsonlStore(shard_path)
        todo = [(r, j) for r, j in items if f"{r['id']}/{j}" not in store]
        with engine_for(self.cfg.teacher) as engine:
            sample_items(self.cfg, engine, todo, store, progress=False)
        return len(todo)


def ray_sample(cfg: RunConfig, problems: list[Problem] | None = None, progress: bool = True, log=print) -> dict:
    import ray

    from heal.sample import _check_config, _prepare_problems, load_run_problems, summarize, todo_items

    lc = cfg.launcher
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_config(cfg, run_dir)
    echo_config(cfg, run_dir)
    rows = _prepare_problems(cfg, run_dir, _load_tokenizer(cfg.teacher), load_run_problems(cfg, problems, log), log)
    store = JsonlStore(run_dir / "samples.jsonl")
    merge_shards(run_dir, store, log)  # what a crashed run left in its shards
    todo = todo_items(cfg, rows, store)
    total = len(rows) * cfg.sample.k
    if todo:
        log(f"ray: {len(store)} samples already in {store.path}, {len(todo)} to go over {lc.workers} workers")
        # Shard by problem (round robin), so one problem's samples stay on one engine.
        order = list(dict.fromkeys(r["id"] for r, _ in todo))
        worker_of = {pid: i % lc.workers for i, pid in enumerate(order)}
        shards = [[it for it in todo if worker_of[it[0]["id"]] == w] for w in range(lc.workers)]
        shards = [s for s in shards if s]
        started_here = not ray.is_initialized()
        if started_here:
            if lc.address:
                ray.init(address=lc.address, log_to_driver=False)
            else:  # a local cluster sized for the workers
                ray.init(num_cpus=max(1, int(round(lc.cpus_per_worker * len(shards)))),
                         num_gpus=int(round(lc.gpus_per_worker * len(shards))), log_to_driver=False,
                         include_dashboard=False)
        Worker = ray.remote(num_cpus=lc.cpus_per_worker, num_gpus=lc.gpus_per_worker)(ShardWorker)
        shard_dir = run_dir / "shards"
        shard_dir.mkdir(exist_ok=True)
        paths = [shard_dir / f"samples.{i}.jsonl" for i in range(len(shards))]
        actors = [Worker.remote(cfg.model_dump(mode="json")) for _ in shards]
        refs = [a.run.remote(s, str(p)) for a, s, p in zip(actors, shards, paths)]
        bar = tqdm(total=total, initial=len(store), unit="sample", desc="sample (ray)", disable=not progress,
                   dynamic_ncols=True)
        try:
            pending = list(refs)
            while pending:
                _, pending = ray.wait(pending, timeout=2.0)
                done = sum(_count_lines(p) for p in paths)
                bar.n = len(store) + done
                bar.refresh()
            ray.get(refs)  # raises a worker's error after everything finished or failed
        finally:
            bar.close()
            merge_shards(run_dir, store, log)  # keep whatever the workers wrote, error or not
            for a in actors:
                ray.kill(a)
            if started_here:
                ray.shutdown()
    return summarize(cfg, run_dir, rows)


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0
