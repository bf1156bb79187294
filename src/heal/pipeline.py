"""`heal run CONFIG`: the whole method in one command, every stage resumable.

sample -> hint -> repair -> filter -> train (PACE and the configured baselines) -> eval -> report.
Each stage reads the previous stages' artifacts from the run directory and skips what is done, so
an interrupted run continues where it stopped when the same command is run again.
"""

from __future__ import annotations

import time
from pathlib import Path

from heal.config import RunConfig
from heal.rundir import writes_run


@writes_run("run")
def run_pipeline(cfg: RunConfig, progress: bool = True, log=print, stop_after: str | None = None) -> Path:
    """Run every stage (or up to and including `stop_after`: "train" or "eval"); returns the report's
    path (the run directory when stopped early)."""
    if stop_after not in (None, "train", "eval"):
        raise ValueError(f"stop_after must be 'train' or 'eval', not {stop_after!r}")
    from heal.evaluation import run_eval
    from heal.gear import run_repair
    from heal.guided import run_guided
    from heal.pace import run_train
    from heal.pure import run_filter
    from heal.reporting import write_report
    from heal.runs import local_engine, ray_session
    from heal.stage0 import format_table, load_run_problems, run_sample

    run_dir = Path(cfg.output_dir)
    t0 = time.time()

    def step(name: str):
        log(f"\n== {name}  ({time.time() - t0:.0f}s into the run)")

    problems = load_run_problems(cfg, None, log)  # a bad data file fails before the teacher loads
    # One teacher load for the three sampling stages; under a Ray launcher one Ray session for the
    # generating stages, whose workers load their own engines.
    with ray_session(cfg):
        with local_engine(cfg, cfg.teacher) as engine:
            step("1/7 sample (Stage 0 rejection sampling)")
            run_sample(cfg, engine=engine, problems=problems, progress=progress, log=log)
            log(format_table(run_dir))
            step("2/7 hint (answer-guided samples)")
            log(str(run_guided(cfg, engine=engine, progress=progress, log=log)))
            step("3/7 repair (GEAR)")
            log(str(run_repair(cfg, engine=engine, progress=progress, log=log)))
        step("4/7 filter (PURE)")  # the teacher is closed first: the scorer may be another model
        log(str(run_filter(cfg, progress=progress, log=log)))
    step("5/7 train (PACE and baselines)")
    run_train(cfg, log=log)
    if stop_after == "train":
        return run_dir
    step("6/7 eval")
    with ray_session(cfg):
        run_eval(cfg, progress=progress, log=log)
    if stop_after == "eval":
        return run_dir
    step("7/7 report")
    [report] = write_report([run_dir])
    log(f"\ndone in {time.time() - t0:.0f}s; report: {report}")
    return report
