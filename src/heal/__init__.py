"""heal: reasoning distillation with HEAL (rejection sampling, GEAR repair, PURE filter, PACE curriculum).

The Python API mirrors the CLI: each `heal <command>` is one function here.
"""

from heal.config import RunConfig, load_config
from heal.problems import Problem, load_problems
from heal.version import __version__


def prepare_model(name: str):
    """`heal models prepare NAME`."""
    from heal.models import prepare

    return prepare(name)


def _config(config, overrides: dict | None) -> RunConfig:
    return config if isinstance(config, RunConfig) else load_config(config, overrides)


def sample(config=None, overrides: dict | None = None, **kwargs) -> dict:
    """`heal sample`: Stage 0 rejection sampling. `config` is a path, a RunConfig or None (the demo);
    keyword arguments go to heal.stage0.run_sample (engine, progress, log)."""
    from heal.stage0 import run_sample

    return run_sample(_config(config, overrides), **kwargs)


def hint(config=None, overrides: dict | None = None, **kwargs) -> dict:
    """`heal hint`: answer-guided samples for the hard and corner problems."""
    from heal.guided import run_guided

    return run_guided(_config(config, overrides), **kwargs)


def repair(config=None, overrides: dict | None = None, **kwargs) -> dict:
    """`heal repair`: GEAR on the failed trajectories (problem_ids: only those problems)."""
    from heal.gear import run_repair

    return run_repair(_config(config, overrides), **kwargs)


def filter(config=None, overrides: dict | None = None, **kwargs) -> dict:  # noqa: A001 (the CLI's name)
    """`heal filter`: PURE scores and verdicts for every answer-correct candidate."""
    from heal.pure import run_filter

    return run_filter(_config(config, overrides), **kwargs)


def train(config=None, overrides: dict | None = None, **kwargs) -> dict:
    """`heal train`: the training sets, then PACE and the baselines (methods: which ones)."""
    from heal.pace import run_train

    return run_train(_config(config, overrides), **kwargs)


def evaluate(config=None, overrides: dict | None = None, **kwargs) -> dict:
    """`heal eval`: the teacher and every trained model on the held-out sets (models: which ones)."""
    from heal.evaluation import run_eval

    return run_eval(_config(config, overrides), **kwargs)


def run(config=None, overrides: dict | None = None, **kwargs):
    """`heal run`: every stage, resumable; returns the report's path."""
    from heal.pipeline import run_pipeline

    return run_pipeline(_config(config, overrides), **kwargs)


def report(run_dirs) -> list:
    """`heal report`: report.md, summary.json and plots of one or more run directories."""
    from heal.reporting import write_report

    return write_report([run_dirs] if isinstance(run_dirs, (str, bytes)) or hasattr(run_dirs, "__fspath__") else run_dirs)


__all__ = ["Problem", "RunConfig", "__version__", "evaluate", "filter", "hint", "load_config", "load_problems",
           "prepare_model", "repair", "report", "run", "sample", "train"]
