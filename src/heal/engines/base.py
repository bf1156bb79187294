"""The engine protocol: what every backend (transformers, llama.cpp, later vLLM and OpenAI-compatible
servers) provides. Engines speak token ids, know nothing of HEAL, and never store full logits:
per generated token they report the sampled token's log-probability and the entropy of the
next-token distribution at temperature 1 (two scalars).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.6  # 0 = greedy
    top_p: float = 0.95
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 384
    seed: int = 0
    stop_token_ids: tuple[int, ...] = ()  # in addition to the model's end-of-sequence tokens

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class Completion:
    """One generated continuation of a prompt (the prompt's ids are not repeated here)."""

    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" (end-of-sequence or a stop token) | "length" (max_new_tokens)
    logprobs: list[float] | None = None  # log p(token_t | context) at temperature 1
    entropy: list[float] | None = None  # H of the next-token distribution at temperature 1, per token
    entropy_kind: str | None = None  # "exact" (full vocabulary) | "topk" (estimate)
    seed: int | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass
class Scored:
    """Teacher-forced pass over a given completion."""

    logprobs: list[float]  # log p(completion_t | prompt, completion_<t), temperature 1
    entropy: list[float] = field(default_factory=list)  # H at each completion position
    entropy_topk: dict[int, list[float]] | None = None  # {k: top-k estimate per position}, where asked for


@runtime_checkable
class Engine(Protocol):
    name: str
    tokenizer: object  # a transformers tokenizer (shared chat template, ids)

    batch_size: int  # prompts per generate() call that use the engine well (1 for single-stream engines)
    context_length: int | None  # tokens of prompt + completion the model takes (None: unknown, a server's)
    eos: set[int] | list[int]  # every token id that ends an assistant turn (generation stops after one)

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, n: int = 1,
                 record_entropy: bool = True, seeds: Sequence[int] | None = None) -> list[list[Completion]]:
        """n completions for each prompt (token ids). Sample j of prompt i uses seed seeds[i] + j
        (seeds default to params.seed) where the engine can seed per sample. A prompt that ends inside
        an assistant turn is a continuation: the engine keeps going from those ids, never re-tokenising
        text, and reuses the KV cache of a prefix it has already seen where it can."""
        ...

    def score(self, prompt: Sequence[int], completion: Sequence[int]) -> Scored:
        """Log-probs and entropies of `completion` given `prompt`, by teacher forcing."""
        ...

    def close(self) -> None:
        ...


class EngineError(RuntimeError):
    """A backend failed in a way a rerun can get past (a server down, a request refused)."""


class ContextError(ValueError):
    """A prompt does not fit the model's context window."""


def check_prompts_fit(engine, prompts: Sequence[tuple[str, Sequence[int]]], max_new_tokens: int, log=print) -> None:
    """Before generating: every (name, prompt ids) plus max_new_tokens must fit the engine's context
    window. A prompt that does not fit would come back as an empty completion scored wrong (its
    problem landing in the corner tier without a word); a trace the context cuts short of
    max_new_tokens would be truncated by the window, not by the setting. Both are one error up front,
    naming the numbers to change."""
    ctx = getattr(engine, "context_length", None)
    if not ctx or not prompts:
        return
    name, longest = max(((n, len(ids)) for n, ids in prompts), key=lambda x: x[1])
    if longest >= ctx:
        n = sum(1 for _, ids in prompts if len(ids) >= ctx)
        raise ContextError(f"{n} prompt(s) do not fit the model's context of {ctx} tokens (longest: "
                           f"{name}, {longest} tokens); raise the context (n_ctx / max_model_len) or drop those problems")
    if longest + max_new_tokens > ctx:
        raise ContextError(f"the longest prompt ({name}, {longest} tokens) + sampling.max_new_tokens={max_new_tokens} "
                           f"exceed the model's context of {ctx} tokens: traces would be cut by the window; raise the "
                           f"context to at least {longest + max_new_tokens} (n_ctx / max_model_len) or lower max_new_tokens")


def entropy_from_logits(logits: np.ndarray) -> np.ndarray:
    """H = -sum p log p over the last axis, from raw logits (temperature 1), in float64."""
    x = logits.astype(np.float64, copy=False)
    m = x.max(axis=-1, keepdims=True)
    z = x - m
    e = np.exp(z)
    s = e.sum(axis=-1, keepdims=True)
    logp = z - np.log(s)
    return -(e / s * logp).sum(axis=-1)


def eos_ids(tokenizer, generation_config=None) -> set[int]:
    """Every id that ends an assistant turn: the tokenizer's EOS and the generation config's."""
    ids: set[int] = set()
    for src in (getattr(generation_config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(int(x) for x in src)
    # Chat models end a turn with an end-of-turn token that may differ from EOS (Qwen: <|im_end|>).
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        tid = tokenizer.convert_tokens_to_ids(tok) if hasattr(tokenizer, "convert_tokens_to_ids") else None
        if isinstance(tid, int) and tid != getattr(tokenizer, "unk_token_id", None) and tid >= 0:
            ids.add(tid)
    return ids


def chat_prompt_ids(tokenizer, question: str, system: str | None = None,
                    template_kwargs: dict | None = None) -> list[int]:
    """Token ids of a chat prompt ending where the assistant's answer begins, exactly as the chat
    template renders it (a template that pre-fills `<think>` leaves it at the end of the prompt).
    template_kwargs go to apply_chat_template (Qwen3's enable_thinking)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    if getattr(tokenizer, "chat_template", None):
        out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                            **(template_kwargs or {}))
        if isinstance(out, dict) or hasattr(out, "input_ids"):
            out = out["input_ids"]
        return [int(t) for t in out]
    # A base model without a chat template: plain text prompt.
    text = (system + "\n\n" if system else "") + question + "\n\n"
    return tokenizer(text, add_special_tokens=True)["input_ids"]
