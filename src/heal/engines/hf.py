"""transformers engine: the exact reference, the scorer and (later) the training model.

Generation is `model.generate` on left-padded batches with the KV cache. A logits processor placed
before the sampling warpers sees the raw next-token logits at every step and keeps two scalars per
row (the entropy at temperature 1, and the log-softmax row needed to read the sampled token's
log-probability at the next step), so no full logits are ever stored.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from transformers import GenerationConfig

from heal.engines.base import (Completion, ContextError, SamplingParams, Scored, check_kv_memory, eos_ids,
                               kv_cache_bytes, kv_shape_from_hf_config, split_at_stop, stop_ids)


class EntropyRecorder:
    """LogitsProcessor that records entropy and the chosen token's log-prob per step (temperature 1)."""

    def __init__(self, prompt_len: int):
        self.prompt_len = prompt_len
        self.entropy: list[torch.Tensor] = []
        self.logprobs: list[torch.Tensor] = []
        self._prev: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._prev is not None:  # the token sampled at the previous step is now known
            z, log_s = self._prev
            self.logprobs.append(z.gather(1, input_ids[:, -1:]).squeeze(1) - log_s)
        # Few passes over the [batch, vocab] row: z = x - max, e = exp(z), s = sum e;
        # log p = z - log s and H = log s - sum(e * z) / s.
        z = scores.float()
        z = z - z.max(dim=-1, keepdim=True).values
        e = torch.exp(z)
        s = e.sum(-1)
        log_s = torch.log(s)
        self.entropy.append(log_s - torch.linalg.vecdot(e, z) / s)
        self._prev = (z, log_s)
        return scores

    def finish(self, sequences: torch.LongTensor) -> None:
        n_steps = sequences.shape[1] - self.prompt_len
        if self._prev is not None and len(self.logprobs) < n_steps:
            z, log_s = self._prev
            self.logprobs.append(z.gather(1, sequences[:, -1:]).squeeze(1) - log_s)
        self._prev = None


class HFEngine:
    name = "hf"

    def __init__(self, model_path: str, device: str = "cpu", dtype: str = "float32", batch_size: int | None = None,
                 model=None, tokenizer=None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = torch.device(device)
        self.batch_size = batch_size or 8  # rows of one padded generate() call
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_path)
        self.model = model or AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
        self.model.to(self.device).eval()
        self.eos = eos_ids(self.tokenizer, self.model.generation_config)
        self.context_length = getattr(self.model.config, "max_position_embeddings", None)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos)
        try:
            self.kv_shape = kv_shape_from_hf_config(self.model.config)
        except (TypeError, ValueError):  # a config without the usual fields: no memory check
            self.kv_shape = None

    # -- generation ---------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, n: int = 1,
                 record_entropy: bool = True, seeds: Sequence[int] | None = None) -> list[list[Completion]]:
        seeds = list(seeds) if seeds is not None else [params.seed] * len(prompts)
        jobs = [(i, j) for i in range(len(prompts)) for j in range(n)]
        out: list[list[Completion | None]] = [[None] * n for _ in prompts]
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start : start + self.batch_size]
            # One torch seed per batch (generate() samples all rows from one global generator), so a
            # sample is reproducible given its batch, not on its own; llama.cpp seeds per sample.
            i0, j0 = chunk[0]
            seed = seeds[i0] + j0
            comps = self._generate_batch([list(prompts[i]) for i, _ in chunk], params, record_entropy, seed)
            for (i, j), c in zip(chunk, comps):
                out[i][j] = c
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams, record_entropy: bool,
                        seed: int) -> list[Completion]:
        width = max(len(p) for p in prompts)
        ctx = self.context_length
        if ctx and width >= ctx:
            raise ContextError(f"a prompt of {width} tokens does not fit the model's context of {ctx} tokens")
        if ctx and width + params.max_new_tokens > ctx:  # positions past the context are not the model's
            params = dataclasses.replace(params, max_new_tokens=ctx - width)
        if self.kv_shape:  # the cache grows with the batch: check the most it can reach before it does
            tokens = width + params.max_new_tokens
            bytes_per = torch.finfo(self.model.dtype).bits // 8
            check_kv_memory(kv_cache_bytes(*self.kv_shape, tokens, len(prompts), bytes_per),
                            f"hf: a KV cache of {len(prompts)} rows x {tokens} tokens ({self.model.dtype})",
                            "lower batch_size or sampling.max_new_tokens", str(self.device))
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, p in enumerate(prompts):  # left padding: every row's last prompt token is aligned
            ids[r, width - len(p) :] = torch.tensor(p)
            mask[r, width - len(p) :] = 1
        recorder = EntropyRecorder(width) if record_entropy else None
        stop = sorted(stop_ids(self, params))
        # A fresh GenerationConfig: nothing a checkpoint's generation_config.json sets (repetition
        # penalty, top_k=50, ...) may change the distribution we sample from or record.
        gen = GenerationConfig(
            max_new_tokens=params.max_new_tokens, eos_token_id=stop, pad_token_id=self.pad_id,
            do_sample=not params.greedy, temperature=params.temperature if not params.greedy else None,
            top_p=params.top_p if not params.greedy else None, top_k=params.top_k if not params.greedy else None,
            return_dict_in_generate=False,
        )
        torch.manual_seed(seed)
        seqs = self.model.generate(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device), generation_config=gen,
            logits_processor=[recorder] if recorder else None,
        )
        new = seqs[:, width:].cpu()
        lp = ent = None
        if recorder is not None:
            recorder.finish(seqs)
            lp = torch.stack(recorder.logprobs, 1).cpu()
            ent = torch.stack(recorder.entropy, 1).cpu()
        comps = []
        for r in range(len(prompts)):
            toks = new[r].tolist()
            cut, reason = split_at_stop(toks, set(stop))  # the stop token and the padding after it go
            toks = toks[:cut]
            comps.append(Completion(
                token_ids=toks,
                text=self.tokenizer.decode(toks, skip_special_tokens=True),
                finish_reason=reason,
                logprobs=lp[r, :cut].tolist() if lp is not None else None,
                entropy=ent[r, :cut].tolist() if ent is not None else None,
                entropy_kind="exact" if ent is not None else None,
                seed=seed,
            ))
        return comps

    # -- teacher forcing ----------------------------------------------------------------------
    @torch.no_grad()
    def score(self, prompt: Sequence[int], completion: Sequence[int]) -> Scored:
        ids = torch.tensor([list(prompt) + list(completion)], device=self.device)
        logits = self.model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
        logp = torch.log_softmax(logits, -1)
        target = torch.tensor(list(completion), device=self.device)
        chosen = logp.gather(1, target[:, None]).squeeze(1)
        ent = -(logp.exp() * logp).sum(-1)
        return Scored(logprobs=chosen.cpu().tolist(), entropy=ent.cpu().tolist())

    def close(self) -> None:
        pass
