"""The engine protocol: what every backend (transformers, llama.cpp, vLLM, OpenAI-compatible servers)
provides, and everything a stage may rely on. Engines speak token ids, know nothing of HEAL, and
never store full logits: per generated token they report the sampled token's log-probability and the
entropy of the next-token distribution at temperature 1 (two scalars).

The end of a turn (one convention for every engine):
- `engine.eos` holds every token id that ends an assistant turn (the tokenizer's EOS, the generation
  config's, and the chat template's end-of-turn token such as `<|im_end|>`); `params.stop_token_ids`
  add to it for one call (`stop_ids`).
- A Completion's `token_ids` and `text` never contain the stop token that ended it:
  `finish_reason == "stop"` says the turn ended there; `"length"` (`truncated`) says max_new_tokens
  (or the context window) cut it. `text == tokenizer.decode(token_ids, skip_special_tokens=True)`.
- So a completion is exactly the text of the turn: a continuation prompt is prompt + a prefix of
  its ids, and training appends the student's own end-of-turn token exactly once (PACE).
  Records written before this convention (the hf engine kept the token) still end with it; stages
  strip a trailing stop token when they read them.

Entropy: `entropy_kind` "exact" is over the full vocabulary (hf, llamacpp); "topk" is
`topk_entropy` over the k <= 20 log-probs a server returns (openai, vllm): the known outcomes plus
the tail as one bucket, a lower bound of the exact value (re-exported here from heal.entropy).

Memory: `context_length` is checked against every prompt before generating (`check_prompts_fit`),
and the KV cache a context needs is estimated from the model's config (`kv_cache_bytes`) and checked
against the memory this machine has free (`check_kv_memory`) before it is allocated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from heal.entropy import topk_entropy  # noqa: F401  (the estimate behind entropy_kind "topk")


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
    """One generated continuation of a prompt (the prompt's ids are not repeated here). token_ids and
    text never include the stop token that ended the turn; finish_reason says whether one did."""

    token_ids: list[int]
    text: str  # tokenizer.decode(token_ids, skip_special_tokens=True)
    finish_reason: str  # "stop" (an end-of-turn or stop token, left out) | "length" (max_new_tokens or the context)
    logprobs: list[float] | None = None  # log p(token_t | context) at temperature 1, one per token id
    entropy: list[float] | None = None  # H of the next-token distribution at temperature 1, one per token id
    entropy_kind: str | None = None  # "exact" (full vocabulary) | "topk" (estimate)
    seed: int | None = None  # the seed it was drawn with (hf: its batch's, one generator per batch)

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
    eos: set[int]  # every token id that ends an assistant turn (generation stops at one, leaving it out)

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, n: int = 1,
                 record_entropy: bool = True, seeds: Sequence[int] | None = None) -> list[list[Completion]]:
        """n completions for each prompt (token ids), at most params.max_new_tokens each, without the
        stop token (see the module's docstring). Sample j of prompt i uses seed seeds[i] + j (seeds
        default to params.seed): llamacpp (single stream), vllm and openai seed each sample on its
        own; hf and llamacpp with parallel > 1 reproduce a sample given its batch. A prompt that ends
        inside an assistant turn is a continuation: the engine keeps going from those ids, never
        re-tokenising text, and reuses the KV cache of a prefix it has already seen where it can.
        record_entropy=False: logprobs, entropy and entropy_kind are None. A prompt that does not
        fit the context is a ContextError."""
        ...

    def score(self, prompt: Sequence[int], completion: Sequence[int]) -> Scored:
        """Log-probs and entropies of `completion` given `prompt`, by teacher forcing: one of each
        per completion token."""
        ...

    def close(self) -> None:
        ...


class EngineError(RuntimeError):
    """A backend failed in a way a rerun can get past (a server down, a request refused)."""


class ContextError(ValueError):
    """A prompt does not fit the model's context window, or the context does not fit in memory."""


def stop_ids(engine, params: SamplingParams | None = None) -> set[int]:
    """Every token id that ends a completion of this call: the engine's end-of-turn tokens and the
    call's own stop tokens."""
    return set(engine.eos) | set(params.stop_token_ids if params else ())


def split_at_stop(token_ids: Sequence[int], stop: set[int]) -> tuple[int, str]:
    """(how many of the generated ids the completion keeps, finish_reason): up to the first stop
    token, which is left out, or all of them when none came ("length")."""
    for t, tok in enumerate(token_ids):
        if tok in stop:
            return t, "stop"
    return len(token_ids), "length"


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


# -- KV-cache memory ---------------------------------------------------------------------------------
# A 32k-token context is mostly KV cache: K and V for every layer, KV head and position of every
# sequence held at once. Estimated from the model's config before it is allocated, so that a context
# the machine cannot hold is one line naming the numbers instead of an allocation failure, a swap
# storm or the OOM killer midway through a run.

GiB = 1024**3


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, tokens: int, sequences: int = 1,
                   bytes_per_value: int = 2) -> int:
    """Bytes of K and V cache for `sequences` contexts of `tokens` positions each."""
    return 2 * layers * kv_heads * head_dim * bytes_per_value * tokens * sequences


def kv_shape_from_hf_config(config) -> tuple[int, int, int]:
    """(layers, KV heads, head dim) from a transformers config object or config.json's dict (a
    multimodal model's text part where it has one)."""
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    text = get("text_config")
    if text:
        return kv_shape_from_hf_config(text)
    heads = int(get("num_attention_heads"))
    kv_heads = int(get("num_key_value_heads") or heads)  # no GQA: one KV head per query head
    head_dim = int(get("head_dim") or get("hidden_size") // heads)
    return int(get("num_hidden_layers")), kv_heads, head_dim


def kv_shape_from_gguf_metadata(meta: dict[str, str]) -> tuple[int, int, int]:
    """(layers, KV heads, head dim) from GGUF metadata (llama_cpp's `Llama.metadata`: strings)."""
    arch = meta["general.architecture"]
    heads = int(meta[f"{arch}.attention.head_count"])
    kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads))
    head_dim = int(meta.get(f"{arch}.attention.key_length") or int(meta[f"{arch}.embedding_length"]) // heads)
    return int(meta[f"{arch}.block_count"]), kv_heads, head_dim


def _cgroup_free() -> int | None:
    """Memory this container may still take (cgroup v2, else v1): its limit less what it uses, page
    cache it could drop counted as free. None without a limit."""
    for limit_f, used_f, stat_f in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current",
                                     "/sys/fs/cgroup/memory.stat"),
                                    ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                     "/sys/fs/cgroup/memory/memory.usage_in_bytes",
                                     "/sys/fs/cgroup/memory/memory.stat")):
        try:
            with open(limit_f) as f:
                raw = f.read().strip()
            if raw == "max" or int(raw) >= 1 << 60:  # no limit (v1 writes a huge number)
                return None
            with open(used_f) as f:
                used = int(f.read())
            with open(stat_f) as f:
                stat = dict(line.split() for line in f if line.count(" ") == 1)
            reclaimable = int(stat.get("inactive_file", stat.get("total_inactive_file", 0)))
            return max(0, int(raw) - used + reclaimable)
        except (OSError, ValueError):
            continue
    return None


def available_memory(device: str = "cpu") -> int | None:
    """Bytes a new allocation can take now on `device`: free GPU memory for cuda (torch's
    mem_get_info), else RAM: MemAvailable, capped by the container's limit (a container's
    /proc/meminfo shows the host's memory). None where it cannot be told."""
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    if str(device) != "cpu":
        return None  # mps and others: no portable probe
    ram = None
    try:
        with open("/proc/meminfo") as f:
            ram = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        pass
    cgroup = _cgroup_free()
    known = [x for x in (ram, cgroup) if x is not None]
    return min(known) if known else None


def check_kv_memory(need: int, what: str, fix: str, device: str = "cpu") -> None:
    """One-line ContextError when `need` bytes (KV cache, plus weights where the caller adds them)
    exceed the memory free on `device`. `what` says where the number comes from, `fix` what to lower."""
    free = available_memory(device)
    if free is not None and need > free:
        where = "GPU memory" if str(device).startswith("cuda") else "RAM"
        raise ContextError(f"{what} needs about {need / GiB:.1f} GiB but only {free / GiB:.1f} GiB of {where} "
                           f"is available: {fix}")
