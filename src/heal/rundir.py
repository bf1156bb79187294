"""The run directory's rules, shared by every stage that writes one.

- `writes_run(name)`: the decorator every stage entry point wears. Before anything loads it checks that
  `output_dir` can be a run directory (one clear line when it is a file, lies under a file or cannot
  be written), takes the run's writer lock (store.run_lock: a second process on the same run is
  refused) and checks the settings Stage 0 pinned.
- Pinned settings: Stage 0 writes the teacher, prompt and sampling it sampled with into
  RUN/sample_config.json. Every later stage that reads the teacher's records compares its own config
  with that pin (`check_pinned`) and refuses a different teacher or prompt, instead of writing records
  tagged with another model into the same run.
- `changed_settings`: which "section.field" values differ between a pin and a config; settings that
  only change speed or transport (threads, batch sizes, timeouts, the server's address) never count.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from heal.store import run_lock


class RunMismatch(RuntimeError):
    """The run directory holds records made under other settings than this config's."""


class RunDirError(RuntimeError):
    """output_dir cannot be used as a run directory."""


# Settings that change how fast or through which address outputs are made, never what they are.
# base_url: the same server reached as localhost or 127.0.0.1 (or moved to another host) still
# serves `served_model`; the model's identity is `model` and `served_model`.
OUTPUT_NEUTRAL = {"threads", "batch_size", "device", "api_key_env", "concurrency", "max_retries", "timeout_s",
                  "tensor_parallel_size", "data_parallel_size", "base_url"}

# What Stage 0 pins (RUN/sample_config.json), and what each later stage reads of it.
PINNED_SECTIONS = ("teacher", "prompt", "sampling")
STAGE_PINS = {
    "hint": PINNED_SECTIONS,
    "repair": PINNED_SECTIONS,
    "filter": ("teacher", "prompt"),  # the default scorer is the teacher; prompts are its token ids
    "train": ("teacher", "prompt"),  # the teacher's tokenizer decodes the training text
    "eval": ("teacher",),  # eval pins its own sampling and prompt (eval/settings.json)
}


def changed_settings(old: dict, new: dict, sections: tuple[str, ...]) -> list[str]:
    """The "section.field" names whose values differ between a pinned config dump and a new one. A
    field added to heal after the pin compares as its default."""
    from heal.config import RunConfig

    defaults = RunConfig().model_dump(mode="json")
    diff = []
    for section in sections:
        o, n = old.get(section, {}), new[section]
        diff += [f"{section}.{k}" for k in sorted(set(o) | set(n))
                 if k not in OUTPUT_NEUTRAL and o.get(k, defaults[section].get(k)) != n.get(k)]
    return diff


def pinned_settings(run_dir: Path) -> dict | None:
    """The settings Stage 0 sampled with (None before the first sample). Runs from before
    sample_config.json existed fall back to the config.yaml their Stage 0 wrote."""
    import yaml

    ref = run_dir / "sample_config.json"
    if ref.exists():
        return json.loads(ref.read_text())
    samples = run_dir / "samples.jsonl"
    if samples.exists() and samples.stat().st_size > 0 and (run_dir / "config.yaml").exists():
        return yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    return None


def check_pinned(cfg, run_dir: Path, stage: str) -> None:
    """Refuse a config whose teacher/prompt/sampling differ from what Stage 0 used on this run."""
    sections = STAGE_PINS.get(stage)
    old = pinned_settings(run_dir) if sections else None
    if old is None:
        return
    if diff := changed_settings(old, cfg.model_dump(mode="json"), sections):
        raise RunMismatch(f"{run_dir} was sampled with other settings than this config's ({', '.join(diff)}); "
                          f"`heal {stage}` must use the run's own (see {run_dir / 'sample_config.json'}), "
                          f"or use another output_dir")


def check_output_dir(run_dir: Path) -> None:
    """One clear line when output_dir cannot be a run directory, before any model loads."""
    for parent in [run_dir, *run_dir.parents]:
        if parent.exists():
            if not parent.is_dir():
                where = "is a file" if parent == run_dir else f"lies under {parent}, which is a file"
                raise RunDirError(f"output_dir {run_dir} {where}; choose a directory")
            break
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"output_dir {run_dir} cannot be created ({e.strerror}); choose a writable directory") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunDirError(f"output_dir {run_dir} is not writable; choose a writable directory")


def _is_main_rank() -> bool:
    # Under `accelerate launch` / torchrun every rank runs the stage; only rank 0 writes, so only it locks.
    return int(os.environ.get("RANK", "0")) == 0


def writes_run(stage: str):
    """Decorate a stage entry point `fn(cfg, ...)`: check output_dir, hold the run's writer lock for
    the call, check the settings Stage 0 pinned."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(cfg, *args, **kwargs):
            run_dir = Path(cfg.output_dir)
            if not _is_main_rank():
                return fn(cfg, *args, **kwargs)
            check_output_dir(run_dir)
            with run_lock(run_dir, f"heal {stage}"):
                check_pinned(cfg, run_dir, stage)
                return fn(cfg, *args, **kwargs)

        return run

    return wrap
