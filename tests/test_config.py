import pytest

from heal.config import ConfigError, RunConfig, load_config, parse_override


def test_embedded_default_loads():
    cfg = load_config(None)
    assert cfg.teacher.model == "qwen2.5-coder-1.5b" and cfg.teacher.engine == "llamacpp"
    assert cfg.sampling.temperature == 0.6 and cfg.sampling.top_p == 0.95  # method doc values
    assert cfg.data.source == "reasoning_gym:chain_sum"


def test_every_field_has_a_default():
    cfg = RunConfig()
    assert cfg.sample.k > 0 and cfg.sample.solved_min_pass == 0.5 and cfg.sample.corner_max_correct == 1


def test_overrides_and_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("sample:\n  k: 8\nteacher:\n  engine: hf\n")
    cfg = load_config(p, dict([parse_override("sampling.temperature=0"), parse_override("data.size=3")]))
    assert (cfg.sample.k, cfg.teacher.engine, cfg.sampling.temperature, cfg.data.size) == (8, "hf", 0, 3)


@pytest.mark.parametrize("text,needle", [
    ("sample:\n  k: 0\n", "sample.k"),
    ("sampling:\n  top_p: 1.5\n", "sampling.top_p"),
    ("teacher:\n  engine: tgi\n", "teacher.engine"),
    ("sampel:\n  k: 3\n", "sampel"),  # a typo is an error, not a silent default
    ("prompt:\n  template: 'no placeholder'\n", "{question}"),
])
def test_invalid_values_have_clear_messages(tmp_path, text, needle):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert needle in str(e.value) and str(p) in str(e.value)


def test_missing_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_shipped_configs_load():
    """Every config the docs point at validates (a misspelt field is an error, not a no-op)."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parent.parent
    for path in [*root.glob("configs/*.yaml"), *root.glob("configs/scale/*.yaml"), *root.glob("experiments/*.yaml")]:
        raw = yaml.safe_load(path.read_text())
        if any("." in key for key in raw):  # an overlay of dotted overrides (pace_experiment.py --overrides)
            load_config(root / "experiments" / "pace_experiment.yaml", raw)
        else:
            load_config(path)
    server, ray = load_config(root / "configs/scale/qwq-server.yaml"), load_config(root / "configs/scale/qwq-ray.yaml")
    assert server.teacher.engine == "openai" and server.pure.scorer_engine == "teacher"
    assert ray.teacher.engine == "vllm" and ray.launcher.kind == "ray" and ray.launcher.gpus_per_worker == 4
    for name in ("ddp", "fsdp", "zero3"):  # accelerate configs parse and name their distributed type
        assert yaml.safe_load((root / "configs/accelerate" / f"{name}.yaml").read_text())["distributed_type"]
