"""The run config: one YAML file describes a run. Every field has a default (from the method doc
where it gives one) and is validated; unknown fields are errors, so a typo never silently falls
back to a default. The resolved config is echoed into the run directory with the package version.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value, info: ValidationInfo):
        # pydantic reads `k: true` as 1; a boolean where a number belongs is a typo, not a count.
        if isinstance(value, bool):
            ann = cls.model_fields[info.field_name].annotation
            if ann is not bool and bool not in getattr(ann, "__args__", ()) and ann is not Any:
                raise ValueError(f"expected {getattr(ann, '__name__', ann)}, got a boolean ({value})")
        return value


class ReasoningConfig(_Strict):
    """A reasoning block (`<think> ... </think>` then the answer) in the model's output."""

    # none: an instruct model (no block). r1 (DeepSeek-R1-Distill), qwq, qwen3: those families' tags
    # and template arguments (heal.reasoning.PRESETS). custom: give start and end below.
    preset: Literal["none", "r1", "qwq", "qwen3", "custom"] = "none"
    start: str | None = None  # the start tag (None: the preset's, "<think>")
    end: str | None = None  # the end tag (None: the preset's, "</think>")
    # Does the chat template end the generation prompt with the start tag (R1-distill, QwQ), so the
    # completion begins inside the block? None: read it from the chat template.
    prefilled: bool | None = None
    # Extra arguments for apply_chat_template (Qwen3: enable_thinking; the preset's are merged in).
    template_kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self):
        if self.preset == "custom" and not (self.start and self.end):
            raise ValueError("reasoning.preset: custom needs reasoning.start and reasoning.end")
        return self


class ModelConfig(_Strict):
    model: str = "qwen2.5-coder-1.5b"  # alias (see `heal models list`), transformers folder, .gguf, or hub id
    engine: Literal["hf", "llamacpp", "openai", "vllm"] = "llamacpp"
    device: str = "cpu"  # hf engine: "cpu", "cuda", "cuda:1", "mps"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # fp32 is ~5x faster than bf16 on CPUs
    n_ctx: int = Field(4096, gt=0)  # llamacpp context window
    # llamacpp threads. None: the cores not already busy when the engine starts (1-minute load average;
    # llama.cpp's threads wait on each other, so a thread on a busy core stalls all of them: 2 threads
    # on 2 busy cores decoded 10x slower than 1). Set it to the core count on a machine of your own.
    threads: int | None = Field(None, gt=0)
    # Prompts per generate() call. hf: one padded batch (None: 8); vllm: one call, scheduled
    # continuously inside (None: 256); results are written after each call, so a smaller value loses
    # less to an interrupt.
    batch_size: int | None = Field(None, gt=0)
    parallel: int = Field(1, gt=0)  # llamacpp: sequences decoded together (one batched step for all)
    # openai engine: `model` names the local tokenizer (alias, folder or hub id); the server is below.
    base_url: str | None = None  # e.g. http://localhost:8000 (the /v1 endpoints are appended)
    served_model: str | None = None  # the server's model name (None: the first of /v1/models)
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this environment variable, never from the file
    top_logprobs: int = Field(20, ge=1, le=20)  # k of the top-k entropy estimate
    concurrency: int = Field(4, gt=0)  # requests in flight
    prompt_format: Literal["text", "token_ids"] = "text"  # token_ids: vLLM; text: llama.cpp's server
    timeout_s: float = Field(300.0, gt=0)
    max_retries: int = Field(4, ge=0)
    # vllm engine (in-process vllm.LLM; top-k entropy with k = top_logprobs): parallelism is passed
    # through, `engine_args` goes to vllm.LLM verbatim (gpu_memory_utilization, max_model_len, ...).
    tensor_parallel_size: int = Field(1, gt=0)
    data_parallel_size: int = Field(1, gt=0)
    engine_args: dict[str, Any] = Field(default_factory=dict)
    # The model's reasoning format (docs/method.md, Reasoning models); preset none: an instruct model.
    reasoning: ReasoningConfig = Field(default_factory=ReasoningConfig)


class DataConfig(_Strict):
    # A file (.jsonl/.json/.csv/.parquet), a saved HF dataset folder, `reasoning_gym:<task>`, `champ`, or a
    # benchmark preset `<preset>:<file or folder>` (math500, aime, amc, gsm8k, gpqa: heal.problems.PRESETS).
    source: str = "reasoning_gym:chain_sum"
    size: int | None = Field(None, gt=0)  # how many to generate (reasoning_gym; default 100) or the first N of a file (None: all)
    seed: int = 0
    params: dict[str, Any] = Field(default_factory=dict)  # reasoning_gym task parameters
    limit: int | None = Field(None, gt=0)  # keep at most this many problems after loading (null: all)
    on_error: Literal["raise", "skip"] = "raise"  # a malformed record: stop with its file/line, or skip and report it
    # Task suffixes that fight the instruction (method doc, "prompt hygiene").
    strip_suffixes: list[str] = Field(
        default_factory=lambda: ["Give only the result as your final answer."]
    )
    # A saved DatasetDict's split. null: "train" if it has one, else its only split (else an error naming them).
    split: str | None = None
    # Where id / question / answer are in each record of a file or saved dataset (no other keys): a key, or a
    # path of keys joined by "." and list indices [i] (negative from the end). OpenAI-evals records:
    # {question: "input[-1].content", answer: ideal}. A list at the answer path (ideal: ["42", "42.0"]) gives
    # its first element as the answer and keeps the others in the problem's meta.other_answers; a string is
    # taken as it is (so `ideal` reads both forms, where `ideal[0]` would refuse a string).
    fields: dict[str, str] = Field(default_factory=lambda: {"id": "id", "question": "question", "answer": "answer"})

    @model_validator(mode="after")
    def _check_fields(self):
        from heal.problems import check_fields  # imported here: the loaders own the path syntax

        check_fields(self.fields)
        return self


class PromptConfig(_Strict):
    system: str | None = None
    template: str = "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


class SamplingConfig(_Strict):
    temperature: float = Field(0.6, ge=0.0)  # 0 = greedy
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)  # 0 = off
    max_new_tokens: int = Field(384, gt=0)
    seed: int = 0


class SampleStageConfig(_Strict):
    k: int = Field(4, gt=0)  # samples per problem (paper: 30)
    record_entropy: bool = True
    solved_min_pass: float = Field(0.5, ge=0.0, le=1.0)  # tier `solved`: pass rate >= this
    corner_max_correct: int = Field(1, ge=0)  # tier `corner`: at most this many correct of K


class GearConfig(_Strict):
    """GEAR repair of failed trajectories (method doc: GEAR)."""

    tiers: list[Literal["solved", "hard", "corner"]] = Field(default_factory=lambda: ["corner"])
    max_trajectories: int = Field(10, gt=0)  # M (paper: 10), distinct wrong answers first
    continuations: int = Field(20, gt=0)  # N (paper: 20)
    # The paper's setting, kept by measurement (docs/method.md, GEAR): on the 1.5B teacher it turns 86%
    # of the cuts into restarts, yet gave the most step-verified repairs per teacher token.
    window: Literal["first_third_tokens", "first_third_steps", "all"] = "first_third_tokens"
    backup: int = Field(1, ge=0)  # steps to back up from the breakpoint (paper: 1)
    smooth_width: int = Field(5, gt=0)  # token-level fallback (fewer than two steps)
    skip_truncated: bool = True  # a truncated trajectory failed for length, not reasoning
    hint_template: str = (
        "Wait, let me re-check. I know the final answer must be {answer}; "
        "let me find where I went wrong and derive it properly.\n\n"
    )
    hint_mode: Literal["reflection", "strip", "keep"] = "reflection"
    reflection: str = "Wait, let me re-check this.\n\n"
    # Where to cut (heal.locate; docs/method.md, GEAR): entropy (the paper's surge in `window`, backed
    # up `backup` steps), random (a seeded random step of the same window: the control), first_error
    # (the step checker's first false step), rollout (cut where the success of hint-free continuations
    # drops most), judge (before the first step the teacher itself judges incorrect). The last three
    # cut right before the step they locate (no back-up). Each records its cost in teacher tokens.
    locator: Literal["entropy", "random", "first_error", "rollout", "judge"] = "entropy"
    locator_seed: int = 0  # random: the step of trajectory s is drawn with stable_seed(locator_seed, s)
    rollout_samples: int = Field(2, gt=0)  # rollout: c hint-free continuations per step boundary
    # judge: asked in a new user turn after each step; the verdict is log p(words[1]) - log p(words[0]).
    judge_question: str = ("Look only at the last step of your solution so far. Is it correct? "
                           "Answer with one word: correct or incorrect.")
    judge_words: tuple[str, str] = ("correct", "incorrect")  # (verdict "fine", verdict "wrong")
    judge_margin: float = 0.0  # judge: a step is judged wrong when its verdict margin exceeds this

    @model_validator(mode="after")
    def _check(self):
        if "{answer}" not in self.hint_template:
            raise ValueError("gear.hint_template must contain '{answer}'")
        return self


class GuidedConfig(_Strict):
    """Answer-guided (STaR-style) sampling for D2 (method doc: answer-guided samples)."""

    tiers: list[Literal["solved", "hard", "corner"]] = Field(default_factory=lambda: ["hard", "corner"])
    samples: int = Field(4, gt=0)  # m per problem
    template: str = (
        "{question}\n\n(For reference, the correct final answer is {answer}. Write a complete, careful "
        "derivation that arrives at it on its own merits, without mentioning that you were given it.)\n"
        "Please reason step by step, and put your final answer within \\boxed{{}}."
    )


class PureConfig(_Strict):
    """PURE filter over every hinted candidate (method doc: PURE)."""

    scorer: str | None = None  # model that scores (default: the teacher), transformers engine
    # hf | llamacpp: that engine on `scorer`; teacher: the teacher's own engine as configured (an
    # openai/vllm teacher scores its candidates through the same server, with prompt log-probs).
    scorer_engine: Literal["hf", "llamacpp", "teacher"] = "hf"
    # Which score a verdict thresholds (heal.pure.score_value): the default is chosen by AUROC against
    # step-checker labels on real repairs (docs/method.md, PURE; experiments/pure_calibration.py).
    # S won (AUROC 0.87 vs 0.77 for rho_step; out of sample it accepts 34 points more genuine repairs
    # at the same fabricated rate). S is in nats of this teacher: recalibrate it for another one.
    score: Literal["rho_step", "rho_ans", "S", "l_max", "rho_sum", "S_rel"] = "S"
    # Reject when score > threshold; chosen on the GEAR probe's 57 candidates, its acceptance rates
    # estimated out of sample by 5-fold cross-validation over problems (docs/method.md, PURE).
    threshold: float = Field(0.1741, gt=0)
    eps: float = Field(0.01, gt=0)  # paper
    reject_hint_mentions: bool = True
    reject_early_answer: bool = True
    verify_steps: Literal["none", "arithmetic"] = "none"  # optional extra filter (never the only one)


class StageConfig(_Strict):
    epochs: float = Field(5.0, gt=0)  # paper: 5
    learning_rate: float = Field(1e-5, gt=0)  # paper: 1e-5


class LoraConfig(_Strict):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"
    merge: bool = True  # save merged weights, so every later stage and eval loads a plain model


class TrainConfig(_Strict):
    """PACE training of the student (method doc: PACE)."""

    student: str = "qwen2.5-coder-0.5b"
    # The student's reasoning format (None: the teacher's, with the pre-fill read from the student's
    # own chat template). Training text is converted from the teacher's format to this one.
    reasoning: ReasoningConfig | None = None
    methods: list[Literal["heal", "sft_rs", "keep_all", "star", "heal_no_pure", "heal_no_curriculum",
                          "heal_continuous"]] = Field(
        default_factory=lambda: ["sft_rs", "heal"])
    stages: dict[Literal["I", "II", "III"], StageConfig] = Field(
        default_factory=lambda: {k: StageConfig() for k in ("I", "II", "III")})
    single: StageConfig = Field(default_factory=StageConfig)  # one-stage methods (sft_rs, star, ...)
    match_budget: bool = True  # one-stage methods get as many optimizer steps as HEAL's three stages
    batch_size: int = Field(8, gt=0)  # paper: 8
    grad_accum: int = Field(1, gt=0)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    max_length: int = Field(1024, gt=0)
    # At most this many examples per problem in each training set (a seeded random choice; None: all).
    # Caps how much the many easy problems with K correct samples outweigh the few hard ones, and
    # bounds the cost of the cumulative stages, which replay D1 each time.
    max_per_problem: int | None = Field(None, gt=0)
    packing: bool = False
    # Recompute activations in the backward pass (TRL's default: on): less memory for one more
    # forward pass. Off is fine where memory is plenty (a 0.5B student at batch 8 in 24 GiB of CPU
    # RAM). Speed and memory only, the same updates: not part of a stage's fingerprint.
    gradient_checkpointing: bool = True
    # Save a resumable checkpoint (weights, optimizer, scheduler, RNG) every this many optimizer
    # steps inside a stage (None: only finished stages survive an interrupt). The next run with
    # the same stage fingerprint resumes from the latest one. Not part of the fingerprint.
    save_steps: int | None = Field(None, gt=0)
    lora: LoraConfig | None = None  # full fine-tuning by default (small students)
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    seed: int = 0
    progress: bool = True

    @model_validator(mode="after")
    def _check(self):
        missing = {"I", "II", "III"} - set(self.stages)
        if missing:
            raise ValueError(f"train.stages needs I, II and III (missing {sorted(missing)})")
        return self


BENCHMARK_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]*"  # a benchmark's name is its folder, RUN/eval/<name>/


class BenchmarkConfig(_Strict):
    """One held-out benchmark of `eval.benchmarks` (method doc: Evaluation, several benchmarks)."""

    # The benchmark's problems (no default: a benchmark without data would fall back to the training
    # generator), e.g. {source: "math500:/data/math500/test.jsonl"}; decontaminated like eval.data. A
    # reasoning_gym source needs a seed far from the training one (eval.data's default is 100000).
    data: DataConfig
    n_samples: int | None = Field(None, gt=0)  # sampled answers per problem, avg@n's n (None: eval.n_samples)
    greedy: bool | None = None  # one greedy answer per problem as well (None: eval.greedy)


class EvalConfig(_Strict):
    """Held-out evaluation (method doc: Evaluation)."""

    # Held-out problems. reasoning-gym derives item i from seed + i, so seed 1 repeats seed 0's items
    # shifted by one: the default seed is far from any training seed (decontamination checks anyway).
    data: DataConfig = Field(default_factory=lambda: DataConfig(seed=100_000))
    n_samples: int = Field(4, gt=0)  # pass@1 over n samples per problem (method doc: 4-8 for larger sets)
    greedy: bool = True
    ngram: int = Field(8, gt=0)  # decontamination: shared word n-grams (numbers are words)
    df_max: float = Field(0.05, gt=0, le=1)  # words in more than this share of training questions are template
    batch_size: int | None = Field(None, gt=0)  # student generation: prompts per call (see ModelConfig.batch_size)
    # Engine for the students (the teacher uses teacher.engine). vllm batches continuously: on 2 CPU
    # cores it generated a SmolLM2 student's answers 2.2x faster than transformers' padded batches,
    # whose rows wait for the longest answer. engine_args go to vllm.LLM (max_model_len, ...).
    engine: Literal["hf", "vllm"] = "hf"
    engine_args: dict[str, Any] = Field(default_factory=dict)
    # Several benchmarks in one run, each with its own n (papers: AIME avg@16-64, MATH-500 avg@4,
    # GPQA avg@8): name -> {data, n_samples, greedy}, each with its held-out set, contamination report,
    # settings pin and records in RUN/eval/<name>/ and its summary under "benchmarks" in
    # RUN/eval/summary.json. Empty (the default): the one set eval.data, in RUN/eval/ itself; when
    # set, eval.data is not evaluated (list it here to keep it).
    benchmarks: dict[str, BenchmarkConfig] = Field(default_factory=dict)

    @field_validator("benchmarks")
    @classmethod
    def _benchmark_names(cls, value: dict[str, BenchmarkConfig]) -> dict[str, BenchmarkConfig]:
        import re

        for name in value:
            if not re.fullmatch(BENCHMARK_NAME, name):
                raise ValueError(f"benchmark name {name!r} is not a folder name (letters, digits, '_' and '-', "
                                 f"starting with a letter or digit): it names RUN/eval/<name>/")
        return value


class VerifyConfig(_Strict):
    method: Literal["math_verify", "reasoning_gym"] = "math_verify"
    timeout_s: float = Field(5.0, gt=0)


class LauncherConfig(_Strict):
    """Where generation runs. local: one engine in this process. ray: Stage 0's problems are sharded
    over Ray actors (one engine each), each writing its own shard of the store (heal.launch)."""
    kind: Literal["local", "ray"] = "local"
    address: str | None = None  # a running cluster ("auto", "ray://head:10001"); None: start a local one
    workers: int = Field(2, gt=0)  # actors (engines); one per GPU or per node at scale
    cpus_per_worker: float = Field(1.0, ge=0)
    gpus_per_worker: float = Field(0.0, ge=0)


class RunConfig(_Strict):
    output_dir: str = "runs/demo"
    teacher: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    sample: SampleStageConfig = Field(default_factory=SampleStageConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    gear: GearConfig = Field(default_factory=GearConfig)
    guided: GuidedConfig = Field(default_factory=GuidedConfig)
    pure: PureConfig = Field(default_factory=PureConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    launcher: LauncherConfig = Field(default_factory=LauncherConfig)

    @model_validator(mode="after")
    def _check(self):
        if "{question}" not in self.prompt.template:
            raise ValueError("prompt.template must contain '{question}'")
        # Templates are str.format strings: check them here, before any model loads, not on the
        # first problem after the teacher has loaded.
        _check_template("prompt.template", self.prompt.template, ("question",))
        _check_template("guided.template", self.guided.template, ("question", "answer"))
        return self


def _check_template(name: str, template: str, fields: tuple[str, ...]) -> None:
    """A str.format template must format with exactly `fields`; literal braces are doubled."""
    allowed = ", ".join("{" + f + "}" for f in fields)
    hint = "write literal braces doubled, e.g. \\boxed{{}} for \\boxed{}"
    try:
        template.format(**{f: "x" for f in fields})
    except KeyError as e:
        raise ValueError(f"{name} uses {{{e.args[0]}}}, which is not one of {allowed}; {hint}") from None
    except (IndexError, ValueError) as e:
        raise ValueError(f"{name} is not a valid template ({e}); {hint}") from None


class ConfigError(ValueError):
    pass


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(root)"
        lines.append(f"  {loc}: {e['msg']}" + (f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""))
    return "\n".join(lines)


def default_config_text() -> str:
    """The embedded default config (configs/demo.yaml shipped inside the package)."""
    return resources.files("heal").joinpath("configs/demo.yaml").read_text()


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> RunConfig:
    """Load a YAML config (None: the embedded default), apply dotted overrides, validate."""
    if path is None:
        source, raw = "<embedded demo.yaml>", yaml.safe_load(default_config_text()) or {}
    else:
        source = str(path)
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
        except (IsADirectoryError, UnicodeDecodeError) as e:
            raise ConfigError(f"config {path} cannot be read ({e.__class__.__name__}): give a YAML file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {source} must be a mapping at the top level")
    for key, value in (overrides or {}).items():
        node = raw
        *parents, leaf = key.split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parents[:i + 1])} is a value, not a section")
        node[leaf] = value
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def parse_override(text: str) -> tuple[str, Any]:
    """`sample.k=8` -> ("sample.k", 8); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.path=value")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"--set {text}: the value is not valid YAML ({problem}); quote it, e.g. "
                          f"--set '{key.strip()}=\"...\"'") from None


def echo_config(cfg: RunConfig, run_dir: Path) -> None:
    """Write the resolved config and the package version into the run directory (atomically)."""
    from heal import __version__
    from heal.store import atomic_write_text

    body = {"heal_version": __version__, **cfg.model_dump(mode="json")}
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(body, sort_keys=False))
