"""The run directory's rules, shared by every stage that writes one.

- `writes_run(name)`: the decorator every stage entry point wears. Before anything loads it checks that
  `output_dir` can be a run directory (one clear line when it is a file, lies under a file or cannot
  be written), takes the run's writer lock (store.run_lock: a second process on the same run is
  refused) and checks the settings Stage 0 pinned.
- Settings pins, one mechanism for every stage. `output_settings(section)` is what of a config section
  can change a stage's output: every field the section's class declares except those marked
  output-neutral in heal.config (threads, batch sizes, timeouts, the server's address: speed and
  transport). `check_settings(pin, settings, records, what)` writes those sections into a pin file
  while `records` is empty and, once it holds records, refuses a config whose output settings differ
  (RunMismatch naming each "section.field"). Stage 0 pins teacher, prompt and sampling in
  RUN/sample_config.json; every later stage that reads the teacher's records compares its own config
  with that pin (`check_pinned`). Training fingerprints hash `output_settings(cfg.train)` (heal.pace).
- `changed_settings`: which "section.field" values differ between a pin and a config. Only the fields
  the new config's class declares count (a pin of a llamacpp teacher holds no hf settings, and an old
  pin may hold every engine's), and a field added to heal after the pin compares as its default.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel

from heal.store import run_lock


class RunMismatch(RuntimeError):
    """The run directory holds records made under other settings than this config's."""


class RunDirError(RuntimeError):
    """output_dir cannot be used as a run directory."""


# What Stage 0 pins (RUN/sample_config.json), and what each later stage reads of it.
PINNED_SECTIONS = ("teacher", "prompt", "sampling")
STAGE_PINS = {
    "hint": PINNED_SECTIONS,
    "repair": PINNED_SECTIONS,
    "filter": ("teacher", "prompt"),  # the default scorer is the teacher; prompts are its token ids
    "train": ("teacher", "prompt"),  # the teacher's tokenizer decodes the training text
    "eval": ("teacher",),  # eval pins its own sampling and prompt (eval/settings.json)
}


def output_settings(section: BaseModel) -> dict:
    """The fields of a config section that change a stage's output, as JSON values: every field its
    class declares but those marked output-neutral (heal.config.is_output_neutral)."""
    from heal.config import is_output_neutral

    neutral = {name for name, info in type(section).model_fields.items() if is_output_neutral(info)}
    return section.model_dump(mode="json", exclude=neutral)


def sections(cfg, names: tuple[str, ...]) -> dict[str, BaseModel]:
    """{name: cfg.<name>}: the sections of a RunConfig a pin holds."""
    return {name: getattr(cfg, name) for name in names}


def _pinned_default(section: BaseModel, name: str):
    from pydantic_core import PydanticUndefined, to_jsonable_python

    default = type(section).model_fields[name].get_default(call_default_factory=True)
    return None if default is PydanticUndefined else to_jsonable_python(default)


def _pinned_value(pin: dict, section: BaseModel, name: str):
    """A field's pinned value as the section's class reads it: missing (added after the pin) is the
    default; a nested section missing a field compares that field as its default too."""
    if name not in pin:
        return _pinned_default(section, name)
    value, now = pin[name], getattr(section, name)
    if isinstance(now, BaseModel) and isinstance(value, dict):
        return {k: value.get(k, _pinned_default(now, k)) for k in output_settings(now)}
    return value


def changed_settings(old: dict, new, names: tuple[str, ...] | None = None) -> list[str]:
    """The "section.field" names whose output settings differ between a pin `old` ({section: dump})
    and `new`: {section: config model}, or a RunConfig (or its JSON dump) with the section `names`."""
    from heal.config import RunConfig

    if names is not None:
        cfg = new if isinstance(new, BaseModel) else RunConfig.model_validate({n: new[n] for n in names})
        new = sections(cfg, names)
    diff = []
    for name, section in new.items():
        pin, now = old.get(name) or {}, output_settings(section)
        diff += [f"{name}.{k}" for k in sorted(now) if _pinned_value(pin, section, k) != now[k]]
    return diff


def check_settings(pin: Path, settings: Mapping[str, BaseModel], records: Path, what: str,
                   fallback: Path | None = None) -> None:
    """Pin `settings` ({section: config model}) in the JSON file `pin` while the store `records` is
    empty; once it holds records, refuse settings whose output fields differ from the pin's, so
    records made under two settings never mix. `what` says what was done to the records ("sampled",
    "evaluated", "scored"). `fallback`: a config echo to read when an old run has records but no pin."""
    written = records.exists() and records.stat().st_size > 0
    old = _read_pin(pin) if pin.exists() else (_read_pin(fallback) if fallback and fallback.exists() else None)
    if written and old is not None and (diff := changed_settings(old, settings)):
        raise RunMismatch(f"{records} was {what} with different settings ({', '.join(diff)}, pinned in {pin}); "
                          f"use another output_dir, or delete both files to start over")
    if not written or not pin.exists():
        from heal.store import atomic_write_text

        body = {name: section.model_dump(mode="json") for name, section in settings.items()}
        atomic_write_text(pin, json.dumps(body, indent=2) + "\n")


def _read_pin(path: Path) -> dict:
    import yaml

    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else (yaml.safe_load(text) or {})


def pinned_settings(run_dir: Path) -> dict | None:
    """The settings Stage 0 sampled with (None before the first sample). Runs from before
    sample_config.json existed fall back to the config.yaml their Stage 0 wrote."""
    ref = run_dir / "sample_config.json"
    if ref.exists():
        return _read_pin(ref)
    samples = run_dir / "samples.jsonl"
    if samples.exists() and samples.stat().st_size > 0 and (run_dir / "config.yaml").exists():
        return _read_pin(run_dir / "config.yaml")
    return None


def check_pinned(cfg, run_dir: Path, stage: str) -> None:
    """Refuse a config whose teacher/prompt/sampling differ from what Stage 0 used on this run."""
    names = STAGE_PINS.get(stage)
    old = pinned_settings(run_dir) if names else None
    if old is None:
        return
    if diff := changed_settings(old, cfg, names):
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
