"""The run config: one YAML file describes a run. Every field has a default (from the method doc
where it gives one), a description (`heal config --fields SECTION` prints them; docs/config.md is
generated from them) and is validated; unknown fields are errors, so a typo never silently falls
back to a default. The teacher's section is one class per engine, chosen by `engine`: a setting of
another engine is an error naming the field and the engine. Fields marked output-neutral
(`json_schema_extra={"output_neutral": True}`) change only speed or transport, never what a stage
writes: heal.rundir leaves them out of every settings pin. The resolved config is echoed into the
run directory with the package version.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, ValidationInfo,
                      field_validator, model_validator)

# Metadata of a field that changes how fast or through which address outputs are made, never what
# they are (heal.rundir.output_settings leaves such fields out of every pin and fingerprint).
NEUTRAL = {"output_neutral": True}


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

    preset: Literal["none", "r1", "qwq", "qwen3", "custom"] = Field(
        "none", description="none: an instruct model (no block). r1 (DeepSeek-R1-Distill), qwq, qwen3: those "
                            "families' tags and template arguments (heal.reasoning.PRESETS). custom: give start and end.")
    start: str | None = Field(None, description='The start tag (None: the preset\'s, "<think>").')
    end: str | None = Field(None, description='The end tag (None: the preset\'s, "</think>").')
    prefilled: bool | None = Field(
        None, description="Does the chat template end the generation prompt with the start tag (R1-distill, QwQ), "
                          "so the completion begins inside the block? None: read it from the chat template.")
    template_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra arguments for apply_chat_template (Qwen3: enable_thinking); the "
                                          "preset's are merged in.")

    @model_validator(mode="after")
    def _check(self):
        if self.preset == "custom" and not (self.start and self.end):
            raise ValueError("reasoning.preset: custom needs reasoning.start and reasoning.end")
        return self


ENGINES = ("hf", "llamacpp", "openai", "vllm")
DEFAULT_ENGINE = "llamacpp"


class EngineConfig(_Strict):
    """What every engine takes. One subclass per engine (HFConfig, LlamaCppConfig, OpenAIConfig,
    VLLMConfig), chosen by `engine`; a field of another engine is an error naming it."""

    model: str = Field("qwen2.5-coder-1.5b",
                       description="An alias (see `heal models list`), a transformers folder, a .gguf file or a hub "
                                   "id. openai: the local tokenizer (chat template and ids); the server is base_url.")
    engine: str = Field(DEFAULT_ENGINE, description="The backend (docs/engines.md): hf, llamacpp, openai or vllm.")
    reasoning: ReasoningConfig = Field(
        default_factory=ReasoningConfig, description="The model's reasoning format (docs/method.md, Reasoning "
                                                     "models); preset none: an instruct model.")


class _Batched(EngineConfig):
    batch_size: int | None = Field(
        None, gt=0, json_schema_extra=NEUTRAL,
        description="Prompts per generate() call (None: the engine's default, hf 8 rows of one padded batch, vllm "
                    "256 scheduled continuously). Results are written after each call, so a smaller value loses "
                    "less to an interrupt.")


class HFConfig(_Batched):
    """engine: hf, transformers in-process: exact entropy; the reference engine and the default scorer."""

    engine: Literal["hf"] = Field("hf", description="transformers in-process (docs/engines.md, hf).")
    device: str = Field("cpu", json_schema_extra=NEUTRAL, description='"cpu", "cuda", "cuda:1", "mps".')
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights and compute dtype (fp32 is the fast one on CPUs: docs/engines.md, hf).")


class LlamaCppConfig(EngineConfig):
    """engine: llamacpp, llama.cpp in-process on a GGUF: exact entropy; the fast CPU sampler."""

    engine: Literal["llamacpp"] = Field("llamacpp", description="llama.cpp in-process (docs/engines.md, llamacpp).")
    n_ctx: int = Field(4096, gt=0, description="Context window in tokens (prompt + completion).")
    threads: int | None = Field(
        None, gt=0, json_schema_extra=NEUTRAL,
        description="CPU threads. None: the cores not already busy when the engine starts (1-minute load average): "
                    "llama.cpp's threads wait on each other, so a thread on a busy core stalls all of them "
                    "(docs/engines.md, Threads). Set it to the core count on a machine of your own.")
    parallel: int = Field(
        1, gt=0, json_schema_extra=NEUTRAL,
        description="Sequences decoded together, one batched step for all (docs/engines.md, Parallel sequences). "
                    "A sample's numerics then depend on its batch, as with batch_size: the same distribution.")


class OpenAIConfig(EngineConfig):
    """engine: openai, an OpenAI-compatible server (vLLM, SGLang, llama.cpp's): top-k entropy."""

    engine: Literal["openai"] = Field("openai", description="An OpenAI-compatible server (docs/engines.md, openai).")
    base_url: str | None = Field(None, json_schema_extra=NEUTRAL,
                                 description="The server, e.g. http://localhost:8000 (the /v1 endpoints are appended). "
                                             "Needed to generate; the model's identity is model and served_model.")
    served_model: str | None = Field(None, description="The server's model name (None: the first of /v1/models).")
    api_key_env: str = Field("OPENAI_API_KEY", json_schema_extra=NEUTRAL,
                             description="The environment variable that holds the key (never the key itself).")
    top_logprobs: int = Field(20, ge=1, le=20, description="k of the top-k entropy estimate.")
    concurrency: int = Field(4, gt=0, json_schema_extra=NEUTRAL, description="Requests in flight.")
    prompt_format: Literal["text", "token_ids"] = Field(
        "text", description="token_ids: exact continuations (vLLM accepts token-id prompts); text: for servers "
                            "that take only text (llama.cpp's).")
    timeout_s: float = Field(300.0, gt=0, json_schema_extra=NEUTRAL, description="Seconds per request.")
    max_retries: int = Field(4, ge=0, json_schema_extra=NEUTRAL,
                             description="Retries with exponential back-off on connection errors, 5xx and 429.")


class VLLMConfig(_Batched):
    """engine: vllm, vLLM in-process (vllm.LLM): continuous batching, top-k entropy."""

    engine: Literal["vllm"] = Field("vllm", description="vLLM in-process (docs/engines.md, vllm).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="vllm.LLM's dtype.")
    top_logprobs: int = Field(20, ge=1, le=20, description="k of the top-k entropy estimate.")
    tensor_parallel_size: int = Field(1, gt=0, json_schema_extra=NEUTRAL, description="GPUs per model replica.")
    data_parallel_size: int = Field(1, gt=0, json_schema_extra=NEUTRAL, description="Model replicas.")
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="Passed to vllm.LLM verbatim (gpu_memory_utilization, max_model_len, ...).")


ENGINE_CONFIGS: dict[str, type[EngineConfig]] = {"hf": HFConfig, "llamacpp": LlamaCppConfig, "openai": OpenAIConfig,
                                                 "vllm": VLLMConfig}


def _engine_tag(value) -> str | None:
    # The discriminator with a default: a section without `engine` is a llamacpp one.
    return value.get("engine", DEFAULT_ENGINE) if isinstance(value, dict) else getattr(value, "engine", None)


# The type of a model section (teacher): the class its `engine` names.
AnyEngineConfig = Annotated[
    Union[Annotated[HFConfig, Tag("hf")], Annotated[LlamaCppConfig, Tag("llamacpp")],
          Annotated[OpenAIConfig, Tag("openai")], Annotated[VLLMConfig, Tag("vllm")]],
    Discriminator(_engine_tag, custom_error_type="unknown_engine",
                  custom_error_message=f"engine must be one of {', '.join(ENGINES)}"),
]


def engine_config(**fields) -> EngineConfig:
    """The config of the engine `fields["engine"]` names (default llamacpp), validated strictly."""
    from pydantic import TypeAdapter

    try:
        return TypeAdapter(AnyEngineConfig).validate_python(fields)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, "(engine config)")) from None


class DataConfig(_Strict):
    """Where the problems come from (docs/method.md, Data)."""

    source: str = Field(
        "reasoning_gym:chain_sum",
        description="A file (.jsonl/.json/.csv/.parquet), a saved HF dataset folder, `reasoning_gym:<task>`, `champ`, "
                    "or a benchmark preset `<preset>:<file or folder>` (math500, aime, amc, gsm8k, gpqa: "
                    "heal.problems.PRESETS).")
    size: int | None = Field(None, gt=0, description="How many to generate (reasoning_gym; None: 100) or the first N "
                                                     "of a file (None: all).")
    seed: int = Field(0, description="reasoning_gym's seed (item i is derived from seed + i).")
    params: dict[str, Any] = Field(default_factory=dict, description="reasoning_gym task parameters.")
    limit: int | None = Field(None, gt=0, description="Keep at most this many problems after loading (None: all).")
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="A malformed record: stop with its file and line, or skip it and report it.")
    strip_suffixes: list[str] = Field(
        default_factory=lambda: ["Give only the result as your final answer."],
        description='Task suffixes that fight the prompt\'s instruction, removed from questions (method doc, '
                    '"prompt hygiene").')
    split: str | None = Field(None, description='A saved DatasetDict\'s split. None: "train" if it has one, else its '
                                                "only split (else an error naming them).")
    fields: dict[str, str] = Field(
        default_factory=lambda: {"id": "id", "question": "question", "answer": "answer"},
        description="Where id, question and answer are in each record of a file or saved dataset (no other keys): a "
                    'key, or a path of keys joined by "." and list indices [i] (negative from the end). OpenAI-evals '
                    'records: {question: "input[-1].content", answer: ideal}. A list at the answer path gives its '
                    "first element as the answer and keeps the others in meta.other_answers; a string is taken as "
                    "it is (so `ideal` reads both forms, where `ideal[0]` would refuse a string).")

    @model_validator(mode="after")
    def _check_fields(self):
        from heal.problems import check_fields  # imported here: the loaders own the path syntax

        check_fields(self.fields)
        return self


class PromptConfig(_Strict):
    """How a problem becomes the user turn (the teacher's and the students' chat template around it)."""

    system: str | None = Field(None, description="The system message (None: none).")
    template: str = Field(
        "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
        description="The user turn, a str.format template with {question}; literal braces doubled.")


class SamplingConfig(_Strict):
    """How the teacher (and the students at evaluation) sample."""

    temperature: float = Field(0.6, ge=0.0, description="0: greedy.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling (1: off).")
    top_k: int = Field(0, ge=0, description="Top-k sampling (0: off).")
    max_new_tokens: int = Field(384, gt=0, description="A longer completion is cut and marked truncated.")
    seed: int = Field(0, description="Sample j of problem p is drawn with a seed derived from (seed, p, j).")


class SampleStageConfig(_Strict):
    """Stage 0: rejection sampling and tiers (method doc: Stage 0)."""

    k: int = Field(4, gt=0, description="Samples per problem (paper: 30).")
    record_entropy: bool = Field(True, description="Record each token's entropy (GEAR's breakpoints need it).")
    solved_min_pass: float = Field(0.5, ge=0.0, le=1.0, description="Tier solved: pass rate >= this.")
    corner_max_correct: int = Field(1, ge=0, description="Tier corner: at most this many correct of K (and hard: "
                                                         "none correct).")


class GearConfig(_Strict):
    """GEAR repair of failed trajectories (method doc: GEAR)."""

    tiers: list[Literal["solved", "hard", "corner"]] = Field(
        default_factory=lambda: ["corner"], description="The tiers whose failed trajectories are repaired.")
    max_trajectories: int = Field(10, gt=0, description="M per problem (paper: 10), distinct wrong answers first.")
    continuations: int = Field(20, gt=0, description="N continuations per cut (paper: 20).")
    window: Literal["first_third_tokens", "first_third_steps", "all"] = Field(
        "first_third_tokens",
        description="Where the entropy surge is looked for: the paper's setting, kept by measurement although it "
                    "turns most cuts into restarts (docs/method.md, GEAR).")
    backup: int = Field(1, ge=0, description="Steps to back up from the breakpoint (paper: 1).")
    smooth_width: int = Field(5, gt=0, description="Token-level fallback when a trajectory has fewer than two steps: "
                                                   "the smoothing width.")
    skip_truncated: bool = Field(True, description="Skip truncated trajectories: they failed for length, not "
                                                   "reasoning.")
    hint_template: str = Field(
        "Wait, let me re-check. I know the final answer must be {answer}; "
        "let me find where I went wrong and derive it properly.\n\n",
        description="The hint inserted at the cut; must contain {answer}.")
    hint_mode: Literal["reflection", "strip", "keep"] = Field(
        "reflection", description="The hint span in the training text: reflection (replaced by `reflection`), strip "
                                  "(removed) or keep (docs/method.md, GEAR).")
    reflection: str = Field("Wait, let me re-check this.\n\n", description="What replaces the hint span (hint_mode "
                                                                           "reflection).")
    locator: Literal["entropy", "random", "first_error", "rollout", "judge"] = Field(
        "entropy",
        description="Where to cut (heal.locate; docs/method.md, GEAR): entropy (the paper's surge in `window`, backed "
                    "up `backup` steps), random (a seeded random step of the same window: the control), first_error "
                    "(the step checker's first false step), rollout (where the success of hint-free continuations "
                    "drops most), judge (before the first step the teacher itself judges incorrect). The last three "
                    "cut right before the step they locate (no back-up). Each records its cost in teacher tokens.")
    locator_seed: int = Field(0, description="random: the step of trajectory s is drawn with "
                                             "stable_seed(locator_seed, s).")
    rollout_samples: int = Field(2, gt=0, description="rollout: c hint-free continuations per step boundary.")
    judge_question: str = Field(
        "Look only at the last step of your solution so far. Is it correct? "
        "Answer with one word: correct or incorrect.",
        description="judge: asked in a new user turn after each step.")
    judge_words: tuple[str, str] = Field(
        ("correct", "incorrect"), description="judge: (verdict fine, verdict wrong); the verdict margin is "
                                              "log p(words[1]) - log p(words[0]).")
    judge_margin: float = Field(0.0, description="judge: a step is judged wrong when its verdict margin exceeds "
                                                 "this.")

    @model_validator(mode="after")
    def _check(self):
        if "{answer}" not in self.hint_template:
            raise ValueError("gear.hint_template must contain '{answer}'")
        return self


class GuidedConfig(_Strict):
    """Answer-guided (STaR-style) sampling for D2 (method doc: answer-guided samples)."""

    tiers: list[Literal["solved", "hard", "corner"]] = Field(
        default_factory=lambda: ["hard", "corner"], description="The tiers whose problems get answer-guided samples.")
    samples: int = Field(4, gt=0, description="m samples per problem.")
    template: str = Field(
        "{question}\n\n(For reference, the correct final answer is {answer}. Write a complete, careful "
        "derivation that arrives at it on its own merits, without mentioning that you were given it.)\n"
        "Please reason step by step, and put your final answer within \\boxed{{}}.",
        description="The user turn with the answer given: a str.format template with {question} and {answer}.")


class PureConfig(_Strict):
    """PURE filter over every hinted candidate (method doc: PURE)."""

    scorer: str | None = Field(None, description="The model that scores (None: the teacher's model).")
    scorer_engine: Literal["hf", "llamacpp", "teacher"] = Field(
        "hf", description="hf | llamacpp: that engine on `scorer`, with the teacher's settings that engine also takes "
                          "(heal.config.scorer_config); teacher: the teacher's own engine as configured (an "
                          "openai/vllm teacher scores its candidates through the same server, with prompt "
                          "log-probs).")
    device: str | None = Field(None, json_schema_extra=NEUTRAL,
                               description="scorer_engine hf: its device (None: the teacher's, if its engine has one, "
                                           'else "cpu"), e.g. cuda beside an openai teacher.')
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="scorer_engine hf: its dtype (None: the teacher's, if its engine has one, else float32).")
    score: Literal["rho_step", "rho_ans", "S", "l_max", "rho_sum", "S_rel"] = Field(
        "S", description="Which score a verdict thresholds (heal.pure.score_value), chosen by AUROC against "
                         "step-checker labels on real repairs (docs/method.md, PURE; "
                         "experiments/pure_calibration.py). S is in nats of this teacher: recalibrate it for "
                         "another one.")
    threshold: float = Field(
        0.1741, gt=0, description="Reject when score > threshold; chosen on the GEAR probe's candidates, its "
                                  "acceptance rates estimated out of sample (docs/method.md, PURE).")
    eps: float = Field(0.01, gt=0, description="The ratios' epsilon (paper).")
    reject_hint_mentions: bool = Field(True, description="Reject a candidate that mentions the hint.")
    reject_early_answer: bool = Field(True, description="Reject a candidate that states the answer before "
                                                        "deriving it.")
    verify_steps: Literal["none", "arithmetic"] = Field(
        "none", description="arithmetic: also reject candidates whose steps the step checker does not verify (an "
                            "extra filter, never the only one).")

    @model_validator(mode="after")
    def _check(self):
        if self.scorer_engine != "hf" and (given := [f for f in ("device", "dtype") if getattr(self, f) is not None]):
            raise ValueError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to scorer_engine hf "
                             f"only (scorer_engine is {self.scorer_engine})")
        return self


class StageConfig(_Strict):
    """One training stage's schedule."""

    epochs: float = Field(5.0, gt=0, description="Epochs (paper: 5).")
    learning_rate: float = Field(1e-5, gt=0, description="Peak learning rate (paper: 1e-5).")


class LoraConfig(_Strict):
    """LoRA instead of full fine-tuning (peft)."""

    r: int = Field(16, gt=0, description="Rank.")
    alpha: int = Field(32, gt=0, description="Scaling alpha.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA inputs.")
    target_modules: list[str] | str = Field("all-linear", description="Modules that get adapters (peft's syntax).")
    merge: bool = Field(True, description="Save merged weights, so every later stage and eval loads a plain model.")


class TrainConfig(_Strict):
    """PACE training of the student (method doc: PACE)."""

    student: str = Field("qwen2.5-coder-0.5b", description="The student: an alias, a transformers folder or a hub id.")
    reasoning: ReasoningConfig | None = Field(
        None, description="The student's reasoning format (None: the teacher's, with the pre-fill read from the "
                          "student's own chat template). Training text is converted from the teacher's format to "
                          "this one.")
    methods: list[Literal["heal", "sft_rs", "keep_all", "star", "heal_no_pure", "heal_no_curriculum",
                          "heal_continuous"]] = Field(
        default_factory=lambda: ["sft_rs", "heal"], json_schema_extra=NEUTRAL,
        description="Which methods to train (docs/method.md, baselines); each trains on its own.")
    stages: dict[Literal["I", "II", "III"], StageConfig] = Field(
        default_factory=lambda: {k: StageConfig() for k in ("I", "II", "III")},
        description="HEAL's three stages (I: D1, II: D1+D2, III: D1+D2+D3).")
    single: StageConfig = Field(default_factory=StageConfig, description="One-stage methods (sft_rs, star, ...).")
    match_budget: bool = Field(True, description="One-stage methods get as many optimizer steps as HEAL's three "
                                                 "stages.")
    batch_size: int = Field(8, gt=0, description="Examples per optimizer step and process (paper: 8).")
    grad_accum: int = Field(1, gt=0, description="Gradient accumulation steps.")
    lr_scheduler: str = Field("cosine", description="A transformers scheduler name.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of a stage's steps spent warming up.")
    max_length: int = Field(1024, gt=0, description="Tokens per example (prompt + completion); longer ones are cut.")
    max_per_problem: int | None = Field(
        None, gt=0, description="At most this many examples per problem in each training set (a seeded random "
                                "choice; None: all). Caps how much the many easy problems outweigh the few hard ones, "
                                "and bounds the cost of the cumulative stages, which replay D1 each time.")
    packing: bool = Field(False, description="Pack several examples into one sequence (TRL).")
    gradient_checkpointing: bool = Field(
        True, json_schema_extra=NEUTRAL,
        description="Recompute activations in the backward pass (TRL's default): less memory for one more forward "
                    "pass. Speed and memory only, the same updates.")
    save_steps: int | None = Field(
        None, gt=0, json_schema_extra=NEUTRAL,
        description="Save a resumable checkpoint (weights, optimizer, scheduler, RNG) every this many optimizer "
                    "steps inside a stage (None: only finished stages survive an interrupt). The next run with the "
                    "same stage fingerprint resumes from the latest one.")
    keep_stage_weights: bool = Field(
        True, json_schema_extra=NEUTRAL,
        description="Keep every stage's weights. False: once a multi-stage method's last stage is done, the weights "
                    "of its earlier stages are deleted (their heal_stage.json, with the loss curve, stays; a stage's fp32 "
                    "weights take 4 bytes a parameter). Under LoRA a stage's adapter "
                    "stays (megabytes), and a later stage that must train again rebuilds the merged weights it "
                    "starts from; under full fine-tuning it retrains the deleted stages.")
    lora: LoraConfig | None = Field(None, description="LoRA settings (None: full fine-tuning).")
    device: str = Field("cpu", description="Where the student trains (under accelerate: its device per process).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Autocast dtype; master weights "
                                                                                    "stay fp32.")
    seed: int = Field(0, description="Stage i shuffles and trains with seed + i.")
    progress: bool = Field(True, json_schema_extra=NEUTRAL, description="Show progress bars.")

    @model_validator(mode="after")
    def _check(self):
        missing = {"I", "II", "III"} - set(self.stages)
        if missing:
            raise ValueError(f"train.stages needs I, II and III (missing {sorted(missing)})")
        return self


BENCHMARK_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]*"  # a benchmark's name is its folder, RUN/eval/<name>/


class BenchmarkConfig(_Strict):
    """One held-out benchmark of `eval.benchmarks` (method doc: Evaluation, several benchmarks)."""

    data: DataConfig = Field(
        description="The benchmark's problems (required: a benchmark without data would fall back to the training "
                    'generator), e.g. {source: "math500:/data/math500/test.jsonl"}; decontaminated like eval.data. '
                    "A reasoning_gym source needs a seed far from the training one.")
    n_samples: int | None = Field(None, gt=0, description="Sampled answers per problem, avg@n's n (None: "
                                                          "eval.n_samples).")
    greedy: bool | None = Field(None, description="One greedy answer per problem as well (None: eval.greedy).")
    tier_samples: int | None = Field(None, ge=0, description="Teacher samples that only set this benchmark's test "
                                                             "tiers (None: eval.tier_samples).")


class EvalConfig(_Strict):
    """Held-out evaluation (method doc: Evaluation)."""

    data: DataConfig = Field(
        default_factory=lambda: DataConfig(seed=100_000),
        description="Held-out problems. reasoning-gym derives item i from seed + i, so seed 1 repeats seed 0's items "
                    "shifted by one: the default seed is far from any training seed (decontamination checks "
                    "anyway).")
    n_samples: int = Field(4, gt=0, description="pass@1 over n samples per problem (method doc: 4-8 for larger "
                                                "sets).")
    greedy: bool = Field(True, description="One greedy answer per problem as well.")
    tier_samples: int = Field(
        0, ge=0,
        description="Teacher samples per test problem that only set its tier, on seeds of their own (the scoring "
                    "seed + 1000 + j), so that the samples scoring the teacher do not also define its tiers (with "
                    "one set, the teacher's corner accuracy is 0 by construction). 0: the tiers come from the "
                    "teacher's scored samples.")
    ngram: int = Field(8, gt=0, description="Decontamination: shared word n-grams (numbers are words).")
    df_max: float = Field(0.05, gt=0, le=1, description="Decontamination: words in more than this share of training "
                                                        "questions are template, not content.")
    batch_size: int | None = Field(None, gt=0, json_schema_extra=NEUTRAL,
                                   description="Student generation: prompts per call (as teacher.batch_size).")
    engine: Literal["hf", "vllm", "llamacpp"] = Field(
        "hf", description="Engine for the students (the teacher uses teacher.engine); vllm batches continuously "
                          "(docs/method.md, Evaluation); llamacpp (CPU machines) runs each student as a GGUF "
                          "(eval.gguf_type) written once into its weights folder (heal.models.export_gguf, the "
                          "student alias's GGUF giving tokenizer and metadata).")
    gguf_type: Literal["f16", "q8_0"] = Field(
        "f16", description="engine llamacpp: the type a student's weights are exported as (norms and biases stay "
                           "F32); q8_0 halves the bytes and decodes faster on CPU, f16 stays closer to the trained "
                           "weights. Like the engine, not part of an answer's key: records made under one are "
                           "reused under the other.")
    engine_args: dict[str, Any] = Field(default_factory=dict, description="engine vllm: passed to vllm.LLM "
                                                                          "(max_model_len, ...); engine llamacpp: "
                                                                          "n_ctx, threads, parallel.")
    benchmarks: dict[str, BenchmarkConfig] = Field(
        default_factory=dict,
        description="Several benchmarks in one run, each with its own n: name -> {data, n_samples, greedy}, each "
                    "with its held-out set, contamination report, settings pin and records in RUN/eval/<name>/ and "
                    'its summary under "benchmarks" in RUN/eval/summary.json. Empty: the one set eval.data, in '
                    "RUN/eval/ itself; when set, eval.data is not evaluated (list it here to keep it).")

    @model_validator(mode="after")
    def _llamacpp_args(self) -> "EvalConfig":
        if self.engine == "llamacpp":
            allowed = {"n_ctx", "threads", "parallel"}
            if extra := sorted(set(self.engine_args) - allowed):
                raise ValueError(f"eval.engine_args {extra} do not apply to engine llamacpp (it takes "
                                 f"{', '.join(sorted(allowed))})")
        return self

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
    """How answers are checked against the gold answer."""

    method: Literal["math_verify", "reasoning_gym"] = Field(
        "math_verify", description="math_verify (symbolic equivalence) or the reasoning_gym task's own scorer.")
    timeout_s: float = Field(5.0, gt=0, json_schema_extra=NEUTRAL,
                             description="Seconds per check (a worker subprocess with a hard timeout).")


class LauncherConfig(_Strict):
    """Where generation runs. local: one engine in this process. ray: every generating stage (sample,
    hint, repair, filter, eval) shards its work by problem over Ray actors (one engine each), each
    writing its own shard of the stage's store (heal.runs.dispatch)."""

    kind: Literal["local", "ray"] = Field("local", description="local: one engine in this process; ray: Ray actors.")
    address: str | None = Field(None, description='A running cluster ("auto", "ray://head:10001"); None: start a '
                                                   "local one.")
    workers: int = Field(2, gt=0, description="Actors (engines); one per GPU or per node at scale.")
    cpus_per_worker: float = Field(1.0, ge=0, description="Ray CPUs per actor.")
    gpus_per_worker: float = Field(0.0, ge=0, description="Ray GPUs per actor.")


class RunConfig(_Strict):
    """A run: its directory and one section per stage."""

    output_dir: str = Field("runs/demo", description="The run directory every stage reads and writes.")
    teacher: AnyEngineConfig = Field(default_factory=LlamaCppConfig,
                                     description="The teacher and its engine (one class per engine, chosen by "
                                                 "teacher.engine).")
    data: DataConfig = Field(default_factory=DataConfig, description="The training problems.")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="The user turn.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="How the teacher samples.")
    sample: SampleStageConfig = Field(default_factory=SampleStageConfig, description="Stage 0.")
    verify: VerifyConfig = Field(default_factory=VerifyConfig, description="Answer checking.")
    gear: GearConfig = Field(default_factory=GearConfig, description="GEAR repairs.")
    guided: GuidedConfig = Field(default_factory=GuidedConfig, description="Answer-guided samples.")
    pure: PureConfig = Field(default_factory=PureConfig, description="The PURE filter.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="PACE training.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Held-out evaluation.")
    launcher: LauncherConfig = Field(default_factory=LauncherConfig, description="Where generation runs.")

    @model_validator(mode="after")
    def _check(self):
        if "{question}" not in self.prompt.template:
            raise ValueError("prompt.template must contain '{question}'")
        # Templates are str.format strings: check them here, before any model loads, not on the
        # first problem after the teacher has loaded.
        _check_template("prompt.template", self.prompt.template, ("question",))
        _check_template("guided.template", self.guided.template, ("question", "answer"))
        return self


def scorer_config(cfg: RunConfig) -> EngineConfig:
    """The PURE scorer's engine config: the teacher's own (pure.scorer_engine: teacher), or pure.scorer
    (default: the teacher's model) on that engine with the teacher's settings that engine also takes.
    Generation throughput (parallel, batch_size) is not carried over: the scorer only scores, and a
    llama.cpp `parallel` context costs memory."""
    if cfg.pure.scorer_engine == "teacher":
        if cfg.pure.scorer not in (None, cfg.teacher.model):
            raise ValueError("pure.scorer_engine: teacher scores with the teacher; leave pure.scorer unset")
        return cfg.teacher
    cls = ENGINE_CONFIGS[cfg.pure.scorer_engine]
    shared = {k: v for k, v in cfg.teacher if k in cls.model_fields and k not in ("engine", "parallel", "batch_size")}
    own = {k: v for k in ("device", "dtype") if (v := getattr(cfg.pure, k)) is not None}  # scorer_engine hf only
    return cls(**shared | own | {"model": cfg.pure.scorer or cfg.teacher.model})


def student_config(cfg: RunConfig, model: str) -> HFConfig | VLLMConfig | LlamaCppConfig:
    """The engine config that evaluates a student model (eval.engine; train.device and train.dtype)."""
    ec = cfg.eval
    if ec.engine == "llamacpp":  # `model`: a folder holding the student's exported GGUF
        return LlamaCppConfig(model=model, **ec.engine_args)
    if ec.engine == "vllm":
        return VLLMConfig(model=model, dtype=cfg.train.dtype, batch_size=ec.batch_size, engine_args=ec.engine_args)
    return HFConfig(model=model, device=cfg.train.device, dtype=cfg.train.dtype, batch_size=ec.batch_size)


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
        loc, msg, got = list(e["loc"]), e["msg"].removeprefix("Value error, "), e.get("input")
        # The engine union puts the engine's name in the path (teacher.hf.n_ctx): the user wrote teacher.n_ctx.
        engine = next((x for i, x in enumerate(loc) if x in ENGINES and (i == 0 or loc[i - 1] == "teacher")), None)
        if engine is not None:
            loc.remove(engine)
        if e["type"] == "extra_forbidden" and engine is not None:
            owners = [name for name, cls in ENGINE_CONFIGS.items() if loc[-1] in cls.model_fields]
            msg = (f"a setting of engine {'/'.join(owners)}, not of engine {engine}" if owners else
                   f"not a setting of engine {engine}") + f" (which takes {', '.join(ENGINE_CONFIGS[engine].model_fields)})"
            got = None
        if e["type"] == "unknown_engine":
            loc.append("engine")
            got = got.get("engine") if isinstance(got, dict) else got
        where = ".".join(str(x) for x in loc) or "(root)"
        lines.append(f"  {where}: {msg}" + (f" (got {got!r})" if got is not None and not isinstance(got, dict) else ""))
    return "\n".join(lines)


def default_config_text() -> str:
    """The embedded default config (configs/demo.yaml shipped inside the package)."""
    return resources.files("heal").joinpath("configs/demo.yaml").read_text()


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> RunConfig:
    """Load a YAML config (None: the embedded default), apply dotted overrides, validate.

    An override that changes the engine (`--set teacher.engine=hf` on a llama.cpp config) drops the
    file's settings of the old engine that the new one does not take (n_ctx, parallel): they
    described the old engine. Settings given with --set are always kept and checked."""
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
    teacher = raw.get("teacher")
    file_teacher = dict(teacher) if isinstance(teacher, dict) else {}
    for key, value in (overrides or {}).items():
        node = raw
        *parents, leaf = key.split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parents[:i + 1])} is a value, not a section")
        node[leaf] = value
    _drop_old_engine_settings(raw, file_teacher, overrides or {})
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def _drop_old_engine_settings(raw: dict, file_teacher: dict, overrides: dict) -> None:
    teacher = raw.get("teacher")
    if "teacher.engine" not in overrides or not isinstance(teacher, dict):
        return
    new = ENGINE_CONFIGS.get(teacher.get("engine"))
    if new is None or teacher.get("engine") == file_teacher.get("engine", DEFAULT_ENGINE):
        return
    given = {key.split(".", 1)[1] for key in overrides if key.startswith("teacher.")}
    for key in [k for k in file_teacher if k not in given and k not in new.model_fields]:
        del teacher[key]


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
    from heal.version import __version__
    from heal.store import atomic_write_text

    body = {"heal_version": __version__, **cfg.model_dump(mode="json")}
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(body, sort_keys=False))


# -- the field reference (`heal config --fields`, docs/config.md) --------------------------------------

# section -> (where it sits in a config, its classes); the teacher has one class per engine.
SECTIONS: dict[str, tuple[str, tuple[type[BaseModel], ...]]] = {
    "run": ("the top level", (RunConfig,)),
    "teacher": ("teacher", (HFConfig, LlamaCppConfig, OpenAIConfig, VLLMConfig)),
    "reasoning": ("teacher.reasoning, train.reasoning", (ReasoningConfig,)),
    "data": ("data, eval.data, eval.benchmarks.<name>.data", (DataConfig,)),
    "prompt": ("prompt", (PromptConfig,)),
    "sampling": ("sampling", (SamplingConfig,)),
    "sample": ("sample", (SampleStageConfig,)),
    "verify": ("verify", (VerifyConfig,)),
    "gear": ("gear", (GearConfig,)),
    "guided": ("guided", (GuidedConfig,)),
    "pure": ("pure", (PureConfig,)),
    "train": ("train", (TrainConfig,)),
    "train.stages": ("train.stages.<I|II|III>, train.single", (StageConfig,)),
    "train.lora": ("train.lora", (LoraConfig,)),
    "eval": ("eval", (EvalConfig,)),
    "eval.benchmarks": ("eval.benchmarks.<name>", (BenchmarkConfig,)),
    "launcher": ("launcher", (LauncherConfig,)),
}


def is_output_neutral(info) -> bool:
    """Does this field (a pydantic FieldInfo) change only speed or transport, never a stage's output?"""
    extra = info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("output_neutral"))


def _type_name(ann) -> str:
    import types
    from typing import get_args, get_origin

    origin, args = get_origin(ann), get_args(ann)
    if ann is type(None):
        return "None"
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (list, dict, tuple):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return "Any" if ann is Any else getattr(ann, "__name__", str(ann))


def field_rows(cls: type[BaseModel]) -> list[dict]:
    """One row per field of a config class: name, type, default (as JSON), description, neutral."""
    import json

    from pydantic_core import PydanticUndefined, to_jsonable_python

    rows = []
    for name, info in cls.model_fields.items():
        default = info.get_default(call_default_factory=True)
        if default is PydanticUndefined:
            shown = "(required)"
        elif isinstance(default, BaseModel):  # a nested section: its class and what differs from its defaults
            shown = f"{type(default).__name__}({', '.join(f'{k}={v!r}' for k, v in default.model_dump(exclude_defaults=True).items())})"
        else:
            shown = json.dumps(to_jsonable_python(default), ensure_ascii=False)
        rows.append({"name": name, "type": _type_name(info.annotation), "default": shown,
                     "description": info.description or "", "neutral": is_output_neutral(info)})
    return rows


def _doc(cls: type[BaseModel]) -> str:
    """A config class's docstring as one paragraph."""
    return " ".join((cls.__doc__ or "").split())


def _section(section: str | None) -> list[str]:
    if section is None:
        return list(SECTIONS)
    if section not in SECTIONS:
        raise ConfigError(f"no config section {section!r}; sections: {', '.join(SECTIONS)}")
    return [section]


def describe_fields(section: str | None = None, width: int = 100) -> str:
    """Every field of a section (None: all) with its type, default and description, as plain text."""
    import textwrap

    out = []
    for name in _section(section):
        where, classes = SECTIONS[name]
        for cls in classes:
            out.append(f"[{name}]" + (f" (in {where})" if where != name else ""))
            out += textwrap.wrap(_doc(cls), width, initial_indent="  ", subsequent_indent="  ")
            for row in field_rows(cls):
                tag = "  [output-neutral]" if row["neutral"] else ""
                out.append(f"  {row['name']}: {row['type']} = {row['default']}{tag}")
                out += textwrap.wrap(row["description"], width, initial_indent=" " * 6, subsequent_indent=" " * 6)
            out.append("")
    return "\n".join(out)


def config_reference(section: str | None = None) -> str:
    """docs/config.md: every section's fields (or one section's) as markdown tables."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    out = ["# Config reference", "",
           "Generated from the field descriptions in `src/heal/config.py` (`heal config --fields all --markdown > docs/config.md`;",
           "a test checks it is up to date). `heal config --fields SECTION` prints the same in a terminal.",
           "Output-neutral fields change only speed or transport: no settings pin or training fingerprint",
           "includes them (heal.rundir).", ""]
    for name in _section(section):
        where, classes = SECTIONS[name]
        for cls in classes:
            title = f"`{name}`" + (f", `engine: {cls.model_fields['engine'].default}`" if name == "teacher" else "")
            out += [f"## {title}", "", f"{_doc(cls)} Where: {where}.", "", "| field | type | default | description |", "|---|---|---|---|"]
            for row in field_rows(cls):
                desc = row["description"] + (" *Output-neutral.*" if row["neutral"] else "")
                out.append(f"| `{row['name']}` | {cell(row['type'])} | `{cell(row['default'])}` | {cell(desc)} |")
            out.append("")
    return "\n".join(out)

