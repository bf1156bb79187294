"""Config per engine, field descriptions and the settings pin (issue 14, items 3 and 5)."""

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from helpers import load_echo

from heal import config as C
from heal.config import ConfigError, RunConfig, load_config
from heal.rundir import (PINNED_SECTIONS, STAGE_PINS, RunMismatch, changed_settings, check_pinned, check_settings,
                         output_settings, sections)

ROOT = Path(__file__).resolve().parent.parent
CLASSES = [c for c in vars(C).values()
           if isinstance(c, type) and issubclass(c, BaseModel) and c.__module__ == C.__name__ and c.model_fields]


def test_every_field_of_every_config_class_has_a_description():
    assert len(CLASSES) >= 20
    missing = [f"{c.__name__}.{n}" for c in CLASSES for n, f in c.model_fields.items() if not (f.description or "").strip()]
    assert missing == []


def test_no_measured_numbers_in_descriptions():
    """Measurements go stale: they live in docs/ and benchmarks/, the descriptions point there."""
    measured = re.compile(r"\d(\.\d+)?\s*(x\b|%|tok/s|s per|GiB|GB\b|MB\b)|AUROC \d|\bmeasured\b", re.I)
    found = [f"{c.__name__}.{n}: {f.description}" for c in CLASSES for n, f in c.model_fields.items()
             if measured.search(f.description or "")]
    assert found == []


def test_the_reference_covers_every_class_and_docs_are_up_to_date():
    listed = {cls for _, classes in C.SECTIONS.values() for cls in classes}
    bases = {c for c in CLASSES if c.__name__.startswith("_")} | {C.EngineConfig}  # listed in each engine's block
    assert set(CLASSES) - bases <= listed
    assert (ROOT / "docs" / "config.md").read_text() == C.config_reference(), \
        "docs/config.md is stale: heal config --fields all --markdown > docs/config.md"


def test_heal_config_fields_prints_type_default_and_description():
    from heal.cli import app

    r = CliRunner().invoke(app, ["config", "--fields", "teacher"])
    assert r.exit_code == 0
    for engine in C.ENGINES:
        assert f"engine: {engine}" in r.output
    assert "  n_ctx: int = 4096\n      Context window" in r.output
    assert "  threads: int | None = null  [output-neutral]" in r.output
    r = CliRunner().invoke(app, ["config", "--fields", "all"])
    assert r.exit_code == 0 and all(f"[{s}]" in r.output for s in C.SECTIONS)
    r = CliRunner().invoke(app, ["config", "--fields", "nope"])
    assert r.exit_code == 2 and "no config section 'nope'; sections: run, teacher" in r.output


def test_engine_picks_the_class_and_llamacpp_is_the_default():
    assert type(RunConfig().teacher) is C.LlamaCppConfig
    assert type(RunConfig(teacher={"model": "m"}).teacher) is C.LlamaCppConfig
    for engine, cls in C.ENGINE_CONFIGS.items():
        assert type(load_config(None, {"teacher": {"engine": engine}}).teacher) is cls
    hf = RunConfig(teacher={"engine": "hf", "device": "cuda", "batch_size": 3}).teacher
    assert (hf.device, hf.batch_size) == ("cuda", 3) and not hasattr(hf, "n_ctx")


@pytest.mark.parametrize("sets,line", [
    ({"teacher.engine": "hf", "teacher.n_ctx": 5},
     "  teacher.n_ctx: a setting of engine llamacpp, not of engine hf (which takes model, engine, reasoning, "
     "batch_size, device, dtype)"),
    ({"teacher.batch_size": 3}, "  teacher.batch_size: a setting of engine hf/vllm, not of engine llamacpp"),
    ({"teacher.engine": "vllm", "teacher.base_url": "http://x"},
     "  teacher.base_url: a setting of engine openai, not of engine vllm"),
    ({"teacher.engine": "hf", "teacher.n_ctxx": 5}, "  teacher.n_ctxx: not a setting of engine hf (which takes"),
    ({"teacher.engine": "tgi"}, "  teacher.engine: engine must be one of hf, llamacpp, openai, vllm (got 'tgi')"),
])
def test_a_setting_of_another_engine_is_one_line_naming_field_and_engine(sets, line):
    with pytest.raises(ConfigError) as e:
        load_config(None, sets)
    lines = str(e.value).splitlines()
    assert len(lines) == 2 and lines[1].startswith(line), lines


def test_the_same_in_a_yaml_file_and_on_the_command_line(tmp_path):
    from heal.cli import app

    p = tmp_path / "c.yaml"
    p.write_text("teacher:\n  engine: hf\n  threads: 2\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(p))}:\n  teacher.threads: a setting of engine llamacpp, "
                                          r"not of engine hf"):
        load_config(p)
    r = CliRunner().invoke(app, ["sample", "--set", "teacher.engine=hf", "--set", "teacher.n_ctx=5"])
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1].startswith("  teacher.n_ctx: a setting of engine llamacpp, not of "
                                                          "engine hf")


def test_switching_the_engine_with_set_drops_the_files_settings_of_the_old_engine(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("teacher:\n  model: m\n  engine: llamacpp\n  parallel: 4\n  n_ctx: 1024\n")
    cfg = load_config(p, {"teacher.engine": "hf", "teacher.device": "cuda"})
    assert cfg.teacher == C.HFConfig(model="m", device="cuda")
    assert load_config(None, {"teacher.engine": "openai"}).teacher.engine == "openai"  # the demo's parallel: 4
    with pytest.raises(ConfigError, match="teacher.parallel"):  # given with --set: kept, so refused
        load_config(p, {"teacher.engine": "hf", "teacher.parallel": 2})
    with pytest.raises(ConfigError, match="teacher.parallel"):  # no engine change: the file's own error
        load_config(p, {"teacher": {"engine": "hf", "parallel": 4}})


def test_engine_config_helpers():
    assert C.engine_config(model="m", engine="hf", batch_size=2) == C.HFConfig(model="m", batch_size=2)
    with pytest.raises(ConfigError, match="n_ctx: a setting of engine llamacpp, not of engine hf"):
        C.engine_config(engine="hf", n_ctx=5)
    cfg = load_config(None, {"teacher.threads": 2, "pure.scorer_engine": "hf"})
    assert C.scorer_config(cfg) == C.HFConfig(model=cfg.teacher.model)
    cfg = load_config(None, {"teacher.threads": 2, "teacher.n_ctx": 2048, "pure.scorer_engine": "llamacpp",
                             "pure.scorer": "other"})
    assert C.scorer_config(cfg) == C.LlamaCppConfig(model="other", threads=2, n_ctx=2048)  # parallel not carried
    cfg = load_config(None, {"teacher": {"engine": "openai", "model": "m"}, "pure.scorer_engine": "hf",
                             "pure.device": "cuda", "pure.dtype": "bfloat16"})  # an hf scorer on a GPU beside a server teacher
    assert C.scorer_config(cfg) == C.HFConfig(model="m", device="cuda", dtype="bfloat16")
    cfg = load_config(None, {"teacher": {"engine": "hf", "model": "m", "device": "cuda:1"}, "pure.scorer_engine": "hf"})
    assert C.scorer_config(cfg) == C.HFConfig(model="m", device="cuda:1")
    with pytest.raises(ConfigError, match=r"pure: device applies to scorer_engine hf only \(scorer_engine is llamacpp\)"):
        load_config(None, {"pure.scorer_engine": "llamacpp", "pure.device": "cuda"})
    teacher = load_config(None, {"pure.scorer_engine": "teacher"})
    assert C.scorer_config(teacher) is teacher.teacher
    with pytest.raises(ValueError, match="leave pure.scorer unset"):
        C.scorer_config(load_config(None, {"pure.scorer_engine": "teacher", "pure.scorer": "x"}))
    s = C.student_config(load_config(None, {"eval.engine": "vllm", "eval.engine_args": {"max_model_len": 9},
                                            "train.dtype": "bfloat16", "eval.batch_size": 5}), "path")
    assert s == C.VLLMConfig(model="path", dtype="bfloat16", engine_args={"max_model_len": 9}, batch_size=5)
    s = C.student_config(load_config(None, {"train.device": "cuda", "eval.batch_size": 5}), "p")
    assert s == C.HFConfig(model="p", device="cuda", batch_size=5)


# -- every committed config loads ---------------------------------------------------------------------

def _committed_yaml() -> list[Path]:
    paths = [*ROOT.glob("configs/*.yaml"), *ROOT.glob("configs/scale/*.yaml"), *ROOT.glob("experiments/*.yaml"),
             *ROOT.glob("src/heal/configs/*.yaml")]
    return sorted(paths)


@pytest.mark.parametrize("path", _committed_yaml(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_committed_config_loads(path):
    raw = yaml.safe_load(path.read_text())
    if any("." in key for key in raw):  # an overlay of dotted overrides (pace_experiment.py --overrides)
        load_config(ROOT / "experiments" / "pace_experiment.yaml", raw)
    else:
        load_config(path)


def _doc_examples() -> list[tuple[str, str]]:
    out = []
    for md in sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md"]):
        for i, m in enumerate(re.finditer(r"```yaml\n(.*?)```", md.read_text(), re.S)):
            raw = yaml.safe_load(m.group(1))
            if isinstance(raw, dict) and set(raw) <= set(RunConfig.model_fields):
                out.append((f"{md.name}#{i}", m.group(1)))
    return out


@pytest.mark.parametrize("name,text", _doc_examples(), ids=[n for n, _ in _doc_examples()])
def test_every_config_example_in_the_docs_loads(tmp_path, name, text):
    (tmp_path / "c.yaml").write_text(text)
    load_config(tmp_path / "c.yaml")


def test_doc_examples_are_found():
    names = [n for n, _ in _doc_examples()]
    assert any(n.startswith("README.md") for n in names) and any(n.startswith("engines.md") for n in names)


# -- committed run directories: their pins still compare equal -----------------------------------------

RUN_CONFIGS = {"gear-probe": "gear_probe.yaml", "pace-smollm2": "pace_experiment.yaml",
               "pace-qwen0.5b": "pace_qwen0.5b.yaml"}


def _pins() -> list[Path]:
    return sorted((ROOT / "experiments" / "runs").rglob("sample_config.json"))


def test_committed_pins_hold_the_old_twenty_field_teacher():
    # the runs made before one config class per engine (later runs pin only their engine's fields)
    old = [pin for pin in _pins()
           if {"device", "n_ctx", "base_url", "engine_args"} <= set(json.loads(pin.read_text())["teacher"])]
    assert len(old) >= 3


@pytest.mark.parametrize("pin", _pins(), ids=lambda p: str(p.parent.relative_to(ROOT)))
def test_committed_pins_compare_equal_with_their_own_config(pin):
    old = json.loads(pin.read_text())
    assert changed_settings(old, load_echo(pin.parent / "config.yaml"), PINNED_SECTIONS) == []


@pytest.mark.parametrize("run,config", RUN_CONFIGS.items())
def test_committed_runs_accept_the_configs_that_made_them(run, config):
    run_dir = ROOT / "experiments" / "runs" / run
    raw = yaml.safe_load((ROOT / "experiments" / config).read_text())
    cfg = load_config(ROOT / "experiments" / "pace_experiment.yaml", raw) if any("." in k for k in raw) \
        else load_config(ROOT / "experiments" / config)
    assert Path(cfg.output_dir) == Path("experiments/runs") / run
    for stage in STAGE_PINS:  # reads the pin (sample_config.json, else config.yaml); writes nothing
        check_pinned(cfg, run_dir, stage)
    other = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"n_ctx": 512})})
    with pytest.raises(RunMismatch, match=r"\(teacher.n_ctx\)"):
        check_pinned(other, run_dir, "repair")


def test_every_committed_echo_loads():
    echoes = sorted((ROOT / "experiments" / "runs").rglob("config.yaml"))
    assert len(echoes) >= 10
    for path in echoes:
        load_echo(path)


# -- one settings pin ------------------------------------------------------------------------------

def test_output_settings_leave_out_the_neutral_fields():
    hf = C.HFConfig(model="m", device="cuda", batch_size=4)
    assert output_settings(hf) == {"model": "m", "engine": "hf", "reasoning": hf.reasoning.model_dump(),
                                   "dtype": "float32"}
    assert set(output_settings(C.OpenAIConfig())) == {"model", "engine", "reasoning", "served_model", "top_logprobs",
                                                      "prompt_format"}
    assert set(C.LlamaCppConfig.model_fields) - set(output_settings(C.LlamaCppConfig())) == {"threads", "parallel"}
    assert set(C.VLLMConfig.model_fields) - set(output_settings(C.VLLMConfig())) == \
        {"batch_size", "tensor_parallel_size", "data_parallel_size"}
    assert set(C.TrainConfig.model_fields) - set(output_settings(C.TrainConfig())) == \
        {"methods", "progress", "gradient_checkpointing", "save_steps", "keep_stage_weights"}
    assert set(C.EvalConfig.model_fields) - set(output_settings(C.EvalConfig())) == {"batch_size"}
    assert output_settings(C.VerifyConfig()) == {"method": "math_verify"}  # a timeout is not a setting of answers
    for cls in (C.PromptConfig, C.SamplingConfig):  # every field of these is pinned
        assert set(output_settings(cls())) == set(cls.model_fields)


def test_changed_settings_compares_only_what_the_new_engine_declares():
    old = {"teacher": {"model": "m", "engine": "llamacpp", "n_ctx": 4096, "device": "cuda", "dtype": "float16",
                       "batch_size": 99, "top_logprobs": 5}}
    new = {"teacher": C.LlamaCppConfig(model="m", threads=3, parallel=8)}
    assert changed_settings(old, new) == []  # reasoning: added after the pin, compares as its default
    assert changed_settings(old, {"teacher": C.LlamaCppConfig(model="m", n_ctx=8)}) == ["teacher.n_ctx"]
    assert changed_settings(old, {"teacher": C.HFConfig(model="m")}) == ["teacher.dtype", "teacher.engine"]
    nested = {"teacher": {**old["teacher"], "reasoning": {"preset": "r1"}}}  # a reasoning field added later
    assert changed_settings(nested, {"teacher": C.LlamaCppConfig(model="m", reasoning={"preset": "r1"})}) == []
    # The old call: a config dump and section names.
    assert changed_settings(old, RunConfig(teacher={"model": "m"}).model_dump(mode="json"), ("teacher",)) == []


def test_check_settings_pins_while_empty_and_refuses_a_change_once_written(tmp_path):
    pin, records = tmp_path / "settings.json", tmp_path / "records.jsonl"
    cfg = RunConfig()
    check_settings(pin, sections(cfg, ("sampling", "prompt")), records, "evaluated")
    assert json.loads(pin.read_text()) == {"sampling": cfg.sampling.model_dump(mode="json"),
                                           "prompt": cfg.prompt.model_dump(mode="json")}
    hot = RunConfig(sampling={"temperature": 1.0})
    check_settings(pin, sections(hot, ("sampling", "prompt")), records, "evaluated")  # nothing written: re-pinned
    assert json.loads(pin.read_text())["sampling"]["temperature"] == 1.0
    records.write_text("{}\n")
    check_settings(pin, sections(hot, ("sampling", "prompt")), records, "evaluated")
    with pytest.raises(RunMismatch, match=re.escape(f"{records} was evaluated with different settings "
                                                    f"(sampling.temperature, sampling.top_k, pinned in {pin}); ")):
        check_settings(pin, sections(RunConfig(sampling={"top_k": 5}), ("sampling", "prompt")), records, "evaluated")
    neutral = RunConfig(sampling={"temperature": 1.0}, teacher={"threads": 7})
    check_settings(pin, sections(neutral, ("sampling",)), records, "evaluated")


def test_check_settings_falls_back_to_an_old_runs_config_echo(tmp_path):
    records, pin, echo = tmp_path / "samples.jsonl", tmp_path / "sample_config.json", tmp_path / "config.yaml"
    records.write_text("{}\n")
    echo.write_text(yaml.safe_dump({"heal_version": "0", **RunConfig().model_dump(mode="json")}))
    with pytest.raises(RunMismatch, match="sampling.seed"):
        check_settings(pin, sections(RunConfig(sampling={"seed": 3}), PINNED_SECTIONS), records, "sampled", echo)
    assert not pin.exists()
    check_settings(pin, sections(RunConfig(teacher={"threads": 2}), PINNED_SECTIONS), records, "sampled", echo)
    assert pin.exists()  # the old run now has its pin


# -- PACE's fingerprint: the same bytes as before the metadata --------------------------------------

def _old_fingerprint(tokenized, stage, init, prev, train) -> str:
    """pace.run_train's fingerprint as it was written before output_settings (commit 479ca0a)."""
    exclude = {"methods", "progress", "gradient_checkpointing", "save_steps",
               "keep_stage_weights"}  # added later (output-neutral): not in the old dump either
    train_keys = train.model_dump(mode="json", exclude=exclude | ({"max_per_problem"} if train.max_per_problem is None
                                                                  else set()))
    return hashlib.sha256(json.dumps([tokenized, stage, init, prev, train_keys], sort_keys=True)
                          .encode()).hexdigest()[:16]


def _train_sections() -> list[C.TrainConfig]:
    out = [C.TrainConfig(), C.TrainConfig(max_per_problem=3, save_steps=5, progress=False, methods=["star"]),
           C.TrainConfig(lora={"r": 4}, reasoning={"preset": "r1"})]
    out += [load_config(p).train for p in _committed_yaml() if not any("." in k for k in yaml.safe_load(p.read_text()))]
    out += [load_echo(p).train for p in sorted((ROOT / "experiments" / "runs").rglob("config.yaml"))]
    return out


def test_stage_fingerprints_are_unchanged_for_existing_runs():
    from heal.pace import stage_fingerprint

    tokenized = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}]
    stage = {"name": "I", "data": ["D1"], "epochs": 1.0, "learning_rate": 1e-5}
    trains = _train_sections()
    assert len(trains) > 10
    for train in trains:
        for prev in (None, "abc"):
            assert stage_fingerprint(tokenized, stage, "init", prev, train) == \
                _old_fingerprint(tokenized, stage, "init", prev, train)
    # Pinned bytes: a hash computed by the pre-metadata code on the default train section.
    assert stage_fingerprint(tokenized, stage, "init", None, C.TrainConfig()) == GOLDEN


GOLDEN = "61c795a452e767f5"  # computed with heal.config and pace.run_train at 479ca0a


@pytest.mark.parametrize("engine", C.ENGINES)
def test_heal_config_output_loads_back(tmp_path, engine):
    """`heal config > my.yaml` (README) gives a config that loads as the same config, for every engine."""
    cfg = load_config(None, {"teacher.engine": engine})
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    assert load_config(tmp_path / "my.yaml") == cfg
