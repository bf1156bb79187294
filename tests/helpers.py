"""Test helpers shared by several test files (pytest puts tests/ on sys.path)."""

import importlib.util
from pathlib import Path
from types import ModuleType

import yaml

ROOT = Path(__file__).resolve().parent.parent


def load_script(relpath: str) -> ModuleType:
    """A script of the repository (e.g. "benchmarks/extract_answer.py") imported by its path, as a
    module of its own (its `if __name__ == "__main__"` part does not run; sys.path is left alone)."""
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_echo(path: Path):
    """The RunConfig of a run's config.yaml as an older heal echoed it: the version line, and a
    teacher section holding every engine's fields (the one-bag ModelConfig); the teacher keeps the
    fields its engine's config class takes."""
    from heal.config import DEFAULT_ENGINE, ENGINE_CONFIGS, RunConfig

    raw = yaml.safe_load(Path(path).read_text())
    raw.pop("heal_version", None)
    teacher_cls = ENGINE_CONFIGS[raw["teacher"].get("engine", DEFAULT_ENGINE)]
    raw["teacher"] = {k: v for k, v in raw["teacher"].items() if k in teacher_cls.model_fields}
    return RunConfig.model_validate(raw)


def write_tiny_run(tmp_path, tiny_model_dir, train: dict | None = None) -> Path:
    """A run directory with hand-made Stage 0 / guided / repair / scored records for a tiny student."""
    from transformers import AutoTokenizer

    from heal.engines.base import chat_prompt_ids
    from heal.store import atomic_write_jsonl

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    run = tmp_path / "run"
    problems, samples, tiers, guided, repairs, scored = [], [], [], [], [], []
    for i in range(4):
        q = f"What is {i} + {i}?"
        prompt_ids = chat_prompt_ids(tok, q)
        problems.append({"id": f"p{i}", "question": q, "answer": str(2 * i), "source": "t", "meta": {},
                         "prompt": q, "prompt_ids": prompt_ids})
        for j in range(2):
            text = f"{i} + {i} = {2 * i}.\n\n\\boxed{{{2 * i}}}"
            ids = tok(text, add_special_tokens=False)["input_ids"] + [end]
            samples.append({"key": f"p{i}/{j}", "problem_id": f"p{i}", "sample_index": j, "token_ids": ids,
                            "n_tokens": len(ids), "text": text, "correct": j == 0 and i < 2, "truncated": False,
                            "pred": str(2 * i)})
        tiers.append({"problem_id": f"p{i}", "tier": "solved" if i < 2 else "corner", "n": 2, "correct": 1})
        for kind, store in (("guided", guided), ("repair", repairs)):
            key = f"p{i}/{kind}/0"
            store.append({"key": key, "problem_id": f"p{i}", "kind": kind, "correct": True, "duplicate": False,
                          "training_ids": ids, "training_text": text, "continuation_ids": ids, "continuation": text,
                          "n_tokens": len(ids), "truncated": False, "pred": str(2 * i), "derivation_ok": True})
            scored.append({"key": key, "problem_id": f"p{i}", "kind": kind, "prefilter": None, "S": 1.0,
                           "l_max": 1.0, "U": 0.1, "S_ref": 1.0, "rho_ans": 0.1,
                           "rho_step": 0.5 if i % 2 == 0 else 9.0, "scorer": "tiny@teacher", "derivation_ok": True})
    for name, rows in [("problems", problems), ("samples", samples), ("tiers", tiers), ("guided", guided),
                       ("repairs", repairs), ("scored", scored)]:
        atomic_write_jsonl(run / f"{name}.jsonl", rows)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "output_dir": str(run), "teacher": {"model": tiny_model_dir},
        "pure": {"score": "rho_step", "threshold": 2.0},
        "train": {"student": tiny_model_dir, "methods": ["heal", "sft_rs"], "batch_size": 2, "progress": False,
                  "warmup_ratio": 0.0,
                  "stages": {k: {"epochs": 1, "learning_rate": 1e-3} for k in ("I", "II", "III")},
                  "single": {"epochs": 1, "learning_rate": 1e-3}} | (train or {}),
    }))
    return cfg_path


# A chat template that pre-fills the start tag of the tests' reasoning format (R1-style): the tags
# are single tokens of SmolLM2's vocabulary, <jupyter_start> ... <jupyter_text>.
PREFILL_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<jupyter_start>\n{% endif %}")
