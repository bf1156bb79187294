"""OpenAI-compatible completions engine (`engine: openai`): vLLM / SGLang / llama.cpp servers and APIs.

Speaks the raw `/v1/completions` endpoint (a chat endpoint would re-apply a template we already
applied). Per generated token the server returns at most k <= 20 top log-probabilities, so the
entropy is the top-k estimate with the tail mass as one bucket (`entropy_kind: "topk"`; a lower
bound of the exact value, see entropy.topk_entropy).

Prompts: servers that accept token ids (`prompt_format: token_ids`, vLLM) get the ids as they are.
Servers that take only text (`prompt_format: text`, llama.cpp's server) get the ids decoded; the
engine checks once, through the server's tokenize endpoint, that the server reads that text back
as the same ids, and refuses to run if it does not. Completion token ids come from the server when
it returns them (vLLM `return_tokens_as_token_ids`) and otherwise from tokenizing the returned
text, checked against the number of log-probs.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import requests

from heal.engines.base import (Completion, ContextError, EngineError, SamplingParams, Scored, eos_ids, split_at_stop,
                               stop_ids, topk_entropy)

# How servers say a prompt does not fit: vLLM and llama-cpp-python "maximum context length",
# SGLang "longer than the model's context length", llama.cpp's server "exceeds the available context size".
_CONTEXT_ERROR = re.compile(r"context[ _](length|window|size)|maximum model length", re.IGNORECASE)


def context_length_from(path: str, payload) -> int | None:
    """The context length a server reports at `path` (its JSON), None where it says nothing:
    /v1/models entries carry `max_model_len` (vLLM, SGLang); SGLang's /server_info (older:
    /get_server_info) `context_length` (null unless set on the command line); llama.cpp's server
    /props `default_generation_settings.n_ctx` (per slot)."""
    def positive(x):
        return int(x) if isinstance(x, int) and not isinstance(x, bool) and x > 0 else None

    if not isinstance(payload, dict):
        return None
    if path == "/props":
        return positive((payload.get("default_generation_settings") or {}).get("n_ctx"))
    return positive(payload.get("max_model_len")) or positive(payload.get("context_length"))


def _byte_level_alphabet() -> dict[int, str]:
    """Byte-level BPE's byte -> printable character map (GPT-2, Qwen, SmolLM2 vocabularies)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars)))


class OpenAIEngine:
    name = "openai"

    def __init__(self, base_url: str, model: str | None, tokenizer, api_key_env: str = "OPENAI_API_KEY",
                 top_logprobs: int = 20, concurrency: int = 4, timeout_s: float = 300.0, max_retries: int = 4,
                 prompt_format: str = "text"):
        self.base_url = base_url.rstrip("/")
        self.tokenizer = tokenizer
        self.k = top_logprobs
        self.batch_size = concurrency
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.prompt_format = prompt_format
        self.session = requests.Session()
        key = os.environ.get(api_key_env)
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"
        self.model, self.context_length = self._served_model(model)
        self.eos = eos_ids(tokenizer)
        self._checked: set[str] = set()

    # -- HTTP ---------------------------------------------------------------------------------------
    def _post(self, path: str, body: dict) -> dict:
        delay = 1.0
        for attempt in range(self.max_retries + 1):
            try:
                r = self.session.post(f"{self.base_url}{path}", json=body, timeout=self.timeout_s)
            except requests.RequestException as e:
                err = f"{type(e).__name__}: {e}"
            else:
                if r.status_code < 500 and r.status_code != 429:
                    if r.status_code in (400, 413) and _CONTEXT_ERROR.search(r.text):
                        raise ContextError(f"{self.base_url}{path}: {r.text[:300]}")
                    if r.status_code >= 400:
                        raise EngineError(f"{self.base_url}{path} answered {r.status_code}: {r.text[:500]}")
                    return r.json()
                err = f"HTTP {r.status_code}: {r.text[:200]}"
            if attempt == self.max_retries:
                raise EngineError(f"{self.base_url}{path} failed after {self.max_retries + 1} tries: {err}")
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    def _served_model(self, name: str | None) -> tuple[str, int | None]:
        """(model name, its context length where the server says: see context_length_from). Without a
        name the server's first model is used, and a server that cannot list one is an error."""
        try:
            r = self.session.get(f"{self.base_url}/v1/models", timeout=self.timeout_s if name is None else 10)
            r.raise_for_status()
            models = r.json()["data"]
            entry = next((m for m in models if m.get("id") == name), None) if name else models[0]
        except (requests.RequestException, ValueError, KeyError, IndexError, TypeError) as e:
            if name is not None:
                return name, None  # the completions endpoint is what matters; its errors are clear
            raise EngineError(f"no model list at {self.base_url}/v1/models ({e}); is the server up?") from None
        return (name or entry["id"]), context_length_from("/v1/models", entry) or self._server_context()

    def _server_context(self) -> int | None:
        """The context length from a server's own info endpoint, where /v1/models did not list it."""
        for path in ("/server_info", "/get_server_info", "/props"):
            try:
                r = self.session.get(f"{self.base_url}{path}", timeout=10)
                ctx = context_length_from(path, r.json()) if r.ok else None
            except (requests.RequestException, ValueError):
                ctx = None
            if ctx:
                return ctx
        return None

    def _prompt(self, ids: Sequence[int]):
        if self.prompt_format == "token_ids":
            return [int(t) for t in ids]
        text = self.tokenizer.decode(list(ids), skip_special_tokens=False)
        if text not in self._checked:  # every distinct prompt: the server must read it back as our ids
            got = self._tokenize(text)
            if list(got) != list(ids):
                raise EngineError(
                    f"{self.base_url} tokenizes the decoded prompt differently from the local tokenizer "
                    f"({len(got)} vs {len(ids)} tokens): a continuation would not be token-exact; "
                    f"use a server that accepts token-id prompts (prompt_format: token_ids)")
            self._checked.add(text)
        return text

    def _tokenize(self, text: str) -> list[int]:
        """The server's tokenization: llama-cpp-python's /extras/tokenize or llama.cpp's /tokenize."""
        for path, body, field in (("/extras/tokenize", {"input": text}, "tokens"),
                                  ("/tokenize", {"content": text, "add_special": False, "parse_special": True}, "tokens")):
            try:
                r = self.session.post(f"{self.base_url}{path}", json=body, timeout=self.timeout_s)
            except requests.RequestException as e:
                raise EngineError(f"{self.base_url}{path}: {type(e).__name__}: {e}") from None
            if r.status_code == 200 and field in r.json():
                return list(r.json()[field])
        raise EngineError(f"{self.base_url} has no tokenize endpoint, so text prompts cannot be checked to be "
                          f"token-exact; use prompt_format: token_ids with a server that accepts token ids")

    # -- protocol -----------------------------------------------------------------------------------
    def _one(self, prompt, params: SamplingParams, seed: int, record_entropy: bool) -> Completion:
        stop = stop_ids(self, params)
        body = {"model": self.model, "prompt": prompt, "max_tokens": params.max_new_tokens,
                "temperature": params.temperature, "top_p": params.top_p if not params.greedy else 1.0,
                "seed": seed, "logprobs": self.k if record_entropy else None}
        if params.top_k:
            body["top_k"] = params.top_k
        if params.stop_token_ids:  # vLLM and SGLang stop there; others are cut below
            body["stop_token_ids"] = list(params.stop_token_ids)
        choice = self._post("/v1/completions", body)["choices"][0]
        text = choice["text"]
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        reason = "length" if choice.get("finish_reason") == "length" else "stop"
        lps = ents = None
        if record_entropy:
            lp = choice.get("logprobs")
            if not lp or lp.get("token_logprobs") is None:
                raise EngineError(f"{self.base_url} returned no logprobs: the server must be started with "
                                  f"log-probabilities enabled (llama.cpp: logits_all; vLLM: max_logprobs >= {self.k})")
            lps = [float(x) for x in lp["token_logprobs"]]
            ents = [topk_entropy(list(d.values())) for d in lp["top_logprobs"]]
            server_ids = self._token_ids(lp.get("tokens") or [])
            if server_ids is not None:
                ids = server_ids  # the server's own tokens: exact, whatever the text re-tokenises to
            if len(lps) == len(ids) + 1 and reason == "stop":  # a log-prob for the end token, absent from text
                lps, ents = lps[:-1], ents[:-1]
            if len(lps) != len(ids):
                raise EngineError(f"{self.base_url} returned {len(lps)} log-probs for a completion the local "
                                  f"tokenizer reads as {len(ids)} tokens: per-token entropies would be misaligned")
        # The protocol's convention: no stop token in the completion. A server that lists the one that
        # ended the turn, or ignores stop_token_ids (llama.cpp's), is cut at the first stop token.
        cut, stopped = split_at_stop(ids, stop)
        if stopped == "stop":
            ids, reason, text = ids[:cut], "stop", self.tokenizer.decode(ids[:cut], skip_special_tokens=True)
            lps, ents = (lps[:cut], ents[:cut]) if lps is not None else (None, None)
        return Completion(token_ids=ids, text=text, finish_reason=reason, logprobs=lps, entropy=ents,
                          entropy_kind="topk" if record_entropy else None, seed=seed)

    def _token_ids(self, pieces: list[str]) -> list[int] | None:
        """Ids of the server's returned tokens: "token_id:N" (vLLM return_tokens_as_token_ids), or
        each piece's text mapped through the byte-level vocabulary; None if a piece does not map to
        exactly one id (the caller then checks the text's own tokenization)."""
        if pieces and all(isinstance(p, str) and p.startswith("token_id:") for p in pieces):
            return [int(p.split(":", 1)[1]) for p in pieces]
        enc = _byte_level_alphabet()
        vocab = self.tokenizer.get_vocab()
        out = []
        for piece in pieces:
            tid = vocab.get("".join(enc[b] for b in piece.encode("utf-8")), vocab.get(piece))
            if tid is None:
                return None
            out.append(tid)
        return out

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, n: int = 1,
                 record_entropy: bool = True, seeds: Sequence[int] | None = None) -> list[list[Completion]]:
        seeds = list(seeds) if seeds is not None else [params.seed] * len(prompts)
        ctx = self.context_length
        if ctx and prompts and max(map(len, prompts)) >= ctx:
            raise ContextError(f"a prompt of {max(map(len, prompts))} tokens does not fit the context of {ctx} "
                               f"tokens {self.base_url} serves")
        texts = [self._prompt(p) for p in prompts]
        jobs = [(i, seeds[i] + j) for i in range(len(prompts)) for j in range(n)]
        with ThreadPoolExecutor(max_workers=self.batch_size) as pool:
            done = list(pool.map(lambda job: self._one(texts[job[0]], params, job[1], record_entropy), jobs))
        return [done[i * n : (i + 1) * n] for i in range(len(prompts))]

    def score(self, prompt: Sequence[int], completion: Sequence[int]) -> Scored:
        """Echo the prompt + completion with log-probs; the completion's are the last ones."""
        full = list(prompt) + list(completion)
        body = {"model": self.model, "prompt": self._prompt(full), "max_tokens": 1, "echo": True,
                "temperature": 1.0, "logprobs": self.k}
        resp = self._post("/v1/completions", body)
        lp = resp["choices"][0].get("logprobs")
        if not lp or not lp.get("token_logprobs"):
            raise EngineError(f"{self.base_url} returned no prompt logprobs for echo=True")
        # The echo lists the prompt's tokens (servers may leave special tokens out) followed by the
        # generated ones: the completion is the last len(completion) entries before those.
        generated = int((resp.get("usage") or {}).get("completion_tokens", 1))
        n = len(lp["token_logprobs"]) - generated
        m = len(completion)
        if n < m:
            raise EngineError(f"echoed log-probs cover {n} prompt tokens, fewer than the {m} to score")
        idx = range(n - m, n)
        return Scored(logprobs=[float(lp["token_logprobs"][i]) for i in idx],
                      entropy=[topk_entropy(list(lp["top_logprobs"][i].values())) for i in idx])

    def close(self) -> None:
        self.session.close()
