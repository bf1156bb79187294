"""heal: reasoning distillation with HEAL (rejection sampling, GEAR repair, PURE filter, PACE curriculum).

The Python API mirrors the CLI: each `heal <command>` is one function here.
"""

__version__ = "0.1.0"

from heal.config import RunConfig, load_config  # noqa: E402
from heal.problems import Problem, load_problems  # noqa: E402


def prepare_model(name: str):
    """`heal models prepare NAME`."""
    from heal.models import prepare

    return prepare(name)


def sample(config=None, overrides: dict | None = None, **kwargs) -> dict:
    """`heal sample`: Stage 0 rejection sampling. `config` is a path, a RunConfig or None (the demo)."""
    from heal.sample import run_sample

    cfg = config if isinstance(config, RunConfig) else load_config(config, overrides)
    return run_sample(cfg, **kwargs)


__all__ = ["Problem", "RunConfig", "load_config", "load_problems", "prepare_model", "sample", "__version__"]
