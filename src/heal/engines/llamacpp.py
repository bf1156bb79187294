"""llama.cpp engine (in-process, llama-cpp-python): the fast CPU sampler on the GGUF files that
`heal models prepare` assembles.

We drive the decode loop ourselves instead of `Llama.generate` for two reasons:
- exact entropy needs the full next-token logits at every step. With `logits_all=False`,
  `Llama.scores` stays empty (an entropy computed from it is silently log(vocab)), so we read the
  current row with `llama_get_logits_ith(ctx, -1)` after each decode;
- the n samples of one prompt share the prompt's KV cache: the prompt is evaluated once, its last
  logits kept, and each sample only rewinds the cache to the end of the prompt.
Sampling (temperature, top-k, top-p) happens in numpy with one seeded generator per sample, so a
sample is reproducible on its own, whatever else ran before it.
"""

from __future__ import annotations

import atexit
import math
import os
from typing import Sequence

import numpy as np

from heal.engines.base import (GiB, Completion, ContextError, SamplingParams, Scored, check_kv_memory, eos_ids,
                               kv_cache_bytes, kv_shape_from_gguf_metadata, stop_ids)


def step_stats(logits: np.ndarray) -> tuple[np.ndarray, float]:
    """(log-softmax at temperature 1, entropy) of one logits row."""
    x = logits.astype(np.float64)
    z = x - x.max()
    e = np.exp(z)
    s = e.sum()
    logp = z - np.log(s)
    return logp, float(-(e * logp).sum() / s)


def sample_token(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """Temperature, then top-k, then top-p (nucleus: the smallest set reaching top_p), as in HF."""
    if params.greedy:
        return int(np.argmax(logits))
    x = logits.astype(np.float64) / params.temperature
    p = np.exp(x - x.max())
    p /= p.sum()
    vocab = p.shape[0]
    # The top 1024 carry essentially all the mass at the temperatures we use; a full sort only
    # happens when they do not reach top_p.
    k = min(vocab, params.top_k or 1024)
    idx = np.argpartition(-p, k - 1)[:k] if k < vocab else np.arange(vocab)
    idx = idx[np.argsort(-p[idx], kind="stable")]
    cum = np.cumsum(p[idx])
    if not params.top_k and cum[-1] < params.top_p and k < vocab:
        idx = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[idx])
    if params.top_k:
        cum = cum / cum[-1]  # top-k renormalises before the nucleus cut
    keep = len(idx) if params.top_p >= 1.0 else min(len(idx), int(np.searchsorted(cum, params.top_p)) + 1)
    q = p[idx[:keep]]
    return int(idx[rng.choice(keep, p=q / q.sum())])


def default_threads(cores: int | None = None, load: float | None = None) -> int:
    """llama.cpp threads when `threads` is unset: the cores this process may use less those other
    processes keep busy (`load`: by default the 1-minute load average less this process's own share,
    rounded). llama.cpp's threads meet at a barrier after every matrix product, so one thread that
    shares its core with a busy process stalls the others: on 2 cores with another process busy on
    both, 2 threads decoded 0.5-1.5 tok/s and 1 thread about 7.5 (benchmarks/llamacpp_build.py
    measures it). Erring low costs a fraction; erring high, 10x."""
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    load = load if load is not None else max(0.0, os.getloadavg()[0] - own_load())
    return max(1, min(cores, cores - int(load + 0.5)))


def own_load(cpu_s: float | None = None, age_s: float | None = None) -> float:
    """This process's own share of the 1-minute load average. The load average counts us too: a
    fresh `heal` process spends its first seconds importing torch and transformers on one core, and
    a restart on an idle 2-core machine took that for another process and got 1 thread. Estimate:
    our CPU seconds over our age (`cpu_s`, `age_s`; read from os.times and /proc when not given),
    weighted as the load average (an exponential average with a 60 s time constant) weighs a load
    that began `age_s` ago. 0 where /proc is unreadable (the load then counts us, as before)."""
    if cpu_s is None or age_s is None:
        try:
            age_s = _age_s()
        except (OSError, ValueError, IndexError):
            return 0.0
        t = os.times()
        cpu_s = t.user + t.system
    if age_s <= 0:
        return 0.0
    return cpu_s / age_s * (1 - math.exp(-age_s / 60))


def _age_s() -> float:
    """Seconds since this process started (its start time in /proc/self/stat, against /proc/uptime)."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in clock ticks


def check_llamacpp_memory(gguf_path: str, n_ctx: int, parallel: int = 1) -> None:
    """The weights and the f16 KV cache the engine will allocate (the main context's n_ctx, plus
    n_ctx x parallel for the parallel context) must fit the RAM free now; the shape comes from the
    GGUF's metadata, read without loading the weights."""
    import llama_cpp
    from llama_cpp import _internals

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True  # metadata only: no weights, no context
    model = _internals.LlamaModel(path_model=gguf_path, params=params, verbose=False)
    try:
        shape = kv_shape_from_gguf_metadata(model.metadata())
    except (KeyError, ValueError):  # metadata without the usual fields: leave it to llama.cpp
        return
    finally:
        model.close()
    tokens = n_ctx * (1 + parallel if parallel > 1 else 1)
    kv = kv_cache_bytes(*shape, tokens, 1, 2)
    weights = os.path.getsize(gguf_path)
    seqs = f"{n_ctx} x {1 + parallel} contexts (parallel={parallel} and the main one)" if parallel > 1 else str(n_ctx)
    check_kv_memory(kv + weights, f"llamacpp: n_ctx={seqs}: a KV cache of {kv / GiB:.1f} GiB (f16, {shape[0]} "
                    f"layers x {shape[1]} KV heads x {shape[2]}) + {weights / GiB:.1f} GiB of weights",
                    "lower teacher.n_ctx or teacher.parallel (a student: n_ctx, parallel in eval.engine_args)", "cpu")


class LlamaCppEngine:
    name = "llamacpp"

    def __init__(self, gguf_path: str, tokenizer=None, tokenizer_path: str | None = None, n_ctx: int = 4096,
                 threads: int | None = None, n_batch: int = 256, seed: int = 0, parallel: int = 1):
        from llama_cpp import Llama
        from transformers import AutoTokenizer

        check_llamacpp_memory(gguf_path, n_ctx, parallel)  # before anything is allocated
        if tokenizer is None:
            if tokenizer_path:
                tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
            else:  # a bare .gguf: transformers reads the tokenizer out of it
                tokenizer = AutoTokenizer.from_pretrained(os.path.dirname(gguf_path) or ".",
                                                          gguf_file=os.path.basename(gguf_path))
        self.tokenizer = tokenizer
        threads = threads or default_threads()
        self.threads = threads
        self.llm = Llama(model_path=gguf_path, n_ctx=n_ctx, n_batch=n_batch, n_threads=threads,
                         logits_all=False, verbose=False, seed=seed)
        atexit.register(self.close)
        self.n_ctx = self.context_length = n_ctx
        self.n_batch = n_batch
        self.parallel = max(1, parallel)
        # Prompts per generate() call: several slots' worth, so a slot freed by a short completion
        # takes the next job instead of idling until its group's longest one ends. Stages append
        # records after each call, so this is also what an interruption can lose.
        self.batch_size = 4 * self.parallel if self.parallel > 1 else 1
        self._pctx = self._pbatch = None
        if self.parallel > 1:
            self._init_parallel(threads)
        self.n_vocab = self.llm.n_vocab()
        self.eos = eos_ids(tokenizer)  # a set
        model_eos = self.llm.token_eos()
        if model_eos >= 0:
            self.eos.add(int(model_eos))

    # -- parallel sequences ---------------------------------------------------------------------
    def _init_parallel(self, threads: int) -> None:
        """A second context on the same weights with `parallel` sequences in one unified KV cache:
        each decode step feeds one token of every live sequence (a matrix-matrix product instead
        of `parallel` matrix-vector ones), and sequences that share a prompt copy its cache."""
        import llama_cpp
        from llama_cpp import _internals

        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.n_ctx * self.parallel
        params.n_batch = params.n_ubatch = max(self.n_batch, self.parallel)
        params.n_seq_max = self.parallel
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = threads
        self._pctx = _internals.LlamaContext(model=self.llm._model, params=params, verbose=False)
        self._pbatch = _internals.LlamaBatch(n_tokens=params.n_batch, embd=0, n_seq_max=self.parallel, verbose=False)

    def _pdecode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """Decode (token, position, sequence, want_logits) entries as one batch."""
        b = self._pbatch.batch
        for i, (tok, pos, seq, want) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, want
            b.seq_id[i][0] = seq
        b.n_tokens = len(entries)
        self._pctx.decode(self._pbatch)

    def _plogits(self, i: int) -> np.ndarray:
        return np.ctypeslib.as_array(self._pctx.get_logits_ith(i), shape=(self.n_vocab,)).copy()

    def _generate_parallel(self, jobs: list[tuple[list[int], int]], params: SamplingParams, record_entropy: bool,
                           stop: set[int]) -> list[Completion]:
        """Continuous batching: `parallel` slots decode together and a slot whose sequence ends takes
        the next job at once, so a long completion never holds the others' slots idle (with static
        groups the step count is the longest completion of each group). A job whose prompt another
        slot already holds copies that slot's prompt cache instead of recomputing it."""
        import llama_cpp

        mem = self._pctx.memory
        llama_cpp.llama_memory_clear(mem, True)
        for prompt, _ in jobs:
            if not prompt:
                raise ContextError("an empty prompt (no token ids) cannot be decoded")
            if len(prompt) >= self.n_ctx:
                raise ContextError(f"prompt of {len(prompt)} tokens does not fit the context window n_ctx={self.n_ctx}")
        rngs = [np.random.default_rng(seed) for _, seed in jobs]
        budget = [min(params.max_new_tokens, self.n_ctx - len(p)) for p, _ in jobs]
        toks: list[list[int]] = [[] for _ in jobs]
        lps: list[list[float]] = [[] for _ in jobs]
        ents: list[list[float]] = [[] for _ in jobs]
        reason = ["length"] * len(jobs)
        # Per slot: its job (None when free), the prompt its cache starts with and that prompt's
        # last logits (kept after the job ends, for the next job with the same prompt), its position.
        job: list[int | None] = [None] * self.parallel
        held: list[list[int] | None] = [None] * self.parallel
        held_logits: list[np.ndarray | None] = [None] * self.parallel
        logits: list[np.ndarray | None] = [None] * self.parallel
        pos = [0] * self.parallel
        queue = iter([j for j in range(len(jobs)) if budget[j] > 0])  # max_new_tokens 0: nothing to sample

        # A recurrent or hybrid model's memory is a state at the sequence's end, not cells per
        # position: a prompt cannot be cut out of a slot that has moved on, so it is decoded afresh.
        model = self.llm._model.model
        reuse = not (llama_cpp.llama_model_is_recurrent(model) or llama_cpp.llama_model_is_hybrid(model))

        def start(s: int, j: int) -> None:
            prompt = jobs[j][0]
            src = s if held[s] == prompt else next((t for t in range(self.parallel) if held[t] == prompt), None)
            if not reuse:
                src = None
            if src == s:  # the slot's own cache starts with this prompt: drop what followed it
                llama_cpp.llama_memory_seq_rm(mem, s, len(prompt), -1)
            else:
                llama_cpp.llama_memory_seq_rm(mem, s, -1, -1)
                if src is not None:
                    llama_cpp.llama_memory_seq_cp(mem, src, s, 0, len(prompt))
                    held_logits[s] = held_logits[src]
                else:
                    for i in range(0, len(prompt), self.n_batch):
                        piece = prompt[i : i + self.n_batch]
                        last = i + len(piece) == len(prompt)
                        self._pdecode([(t, i + k, s, last and k == len(piece) - 1) for k, t in enumerate(piece)])
                    held_logits[s] = self._plogits(len(piece) - 1)
                held[s] = prompt
            job[s], logits[s], pos[s] = j, held_logits[s], len(prompt)

        for s in range(self.parallel):
            if (j := next(queue, None)) is not None:
                start(s, j)
        while any(j is not None for j in job):
            feed = []
            for s, j in enumerate(job):
                if j is None:
                    continue
                tok = sample_token(logits[s], params, rngs[j])
                ended = tok in stop
                if ended:  # the turn ends here; the stop token is not part of the completion
                    reason[j] = "stop"
                else:
                    if record_entropy:
                        logp, h = step_stats(logits[s])
                        lps[j].append(float(logp[tok]))
                        ents[j].append(h)
                    toks[j].append(tok)
                    ended = len(toks[j]) >= budget[j]
                if not ended:
                    feed.append((s, tok))
                elif (nxt := next(queue, None)) is not None:
                    start(s, nxt)  # its first token is sampled in the next step, with the others'
                else:
                    job[s] = None
            if feed:
                self._pdecode([(tok, pos[s], s, True) for s, tok in feed])
                for i, (s, _) in enumerate(feed):
                    logits[s] = self._plogits(i)
                    pos[s] += 1
        return [Completion(token_ids=toks[j], text=self.tokenizer.decode(toks[j], skip_special_tokens=True),
                           finish_reason=reason[j], logprobs=lps[j] if record_entropy else None,
                           entropy=ents[j] if record_entropy else None,
                           entropy_kind="exact" if record_entropy else None, seed=jobs[j][1])
                for j in range(len(jobs))]

    # -- low level ------------------------------------------------------------------------------
    def _logits(self, i: int = -1) -> np.ndarray:
        ptr = self.llm._ctx.get_logits_ith(i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def _prefill(self, ids: list[int]) -> np.ndarray:
        """Make the KV cache hold exactly `ids`, reusing the longest cached prefix; return the
        logits after the last id."""
        llm = self.llm
        if len(ids) >= self.n_ctx:
            raise ContextError(f"prompt of {len(ids)} tokens does not fit the context window n_ctx={self.n_ctx}")
        cached = llm.input_ids[: llm.n_tokens]
        common = 0
        lim = min(len(cached), len(ids))
        if lim:
            diff = np.nonzero(cached[:lim] != np.asarray(ids[:lim]))[0]
            common = int(diff[0]) if len(diff) else lim
        common = min(common, len(ids) - 1)  # always re-evaluate at least one token for fresh logits
        llm.n_tokens = common
        llm.eval(ids[common:])  # removes stale KV entries past n_tokens, decodes in n_batch chunks
        return self._logits(-1)

    # -- protocol ------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, n: int = 1,
                 record_entropy: bool = True, seeds: Sequence[int] | None = None) -> list[list[Completion]]:
        stop = stop_ids(self, params)
        seeds = list(seeds) if seeds is not None else [params.seed] * len(prompts)
        if self.parallel > 1:
            jobs = [([int(t) for t in p], seed + j) for p, seed in zip(prompts, seeds) for j in range(n)]
            flat = self._generate_parallel(jobs, params, record_entropy, stop)
            return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]
        out = []
        for prompt, base_seed in zip(prompts, seeds):
            prompt = [int(t) for t in prompt]
            first_logits = self._prefill(prompt)
            comps = []
            for j in range(n):
                seed = base_seed + j
                rng = np.random.default_rng(seed)
                self.llm.n_tokens = len(prompt)  # rewind to the end of the prompt (shared KV)
                logits = first_logits
                toks: list[int] = []
                lps: list[float] = []
                ents: list[float] = []
                reason = "length"
                budget = min(params.max_new_tokens, self.n_ctx - len(prompt))
                for step in range(budget):
                    tok = sample_token(logits, params, rng)
                    if tok in stop:  # the turn ends here; the stop token is not part of the completion
                        reason = "stop"
                        break
                    if record_entropy:
                        logp, h = step_stats(logits)
                        lps.append(float(logp[tok]))
                        ents.append(h)
                    toks.append(tok)
                    if step + 1 < budget:  # the last token's successor is never needed
                        self.llm.eval([tok])
                        logits = self._logits(-1)
                comps.append(Completion(
                    token_ids=toks,
                    text=self.tokenizer.decode(toks, skip_special_tokens=True),
                    finish_reason=reason,
                    logprobs=lps if record_entropy else None,
                    entropy=ents if record_entropy else None,
                    entropy_kind="exact" if record_entropy else None,
                    seed=seed,
                ))
            out.append(comps)
        return out

    def score(self, prompt: Sequence[int], completion: Sequence[int], chunk: int = 64, topk: Sequence[int] = ()) -> Scored:
        """Teacher forcing: decode the completion with logits requested at every position. For each k in
        `topk`, also the top-k entropy estimate a k-log-prob server would give (Scored.entropy_topk[k])."""
        prompt = [int(t) for t in prompt]
        completion = [int(t) for t in completion]
        if len(prompt) + len(completion) > self.n_ctx:
            raise ContextError(f"prompt+completion of {len(prompt) + len(completion)} tokens exceeds n_ctx={self.n_ctx}")
        if not completion:
            return Scored(logprobs=[], entropy=[])
        llm = self.llm
        rows = [step_stats(self._prefill(prompt))]  # distribution of completion[0]
        to_feed = completion[:-1]  # the last token's successor is not needed
        for start in range(0, len(to_feed), chunk):
            piece = to_feed[start : start + chunk]
            n_past = llm.n_tokens
            llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
            llm._batch.set_batch(batch=piece, n_past=n_past, logits_all=True)
            llm._ctx.decode(llm._batch)
            llm.input_ids[n_past : n_past + len(piece)] = piece
            llm.n_tokens += len(piece)
            rows.extend(step_stats(self._logits(i)) for i in range(len(piece)))
        est = None
        if topk:
            from heal.entropy import topk_entropy

            est = {k: [topk_entropy(np.partition(lp, -k)[-k:]) for lp, _ in rows] for k in topk}
        return Scored(logprobs=[float(lp[t]) for (lp, _), t in zip(rows, completion)],
                      entropy=[h for _, h in rows], entropy_topk=est)

    def close(self) -> None:
        # Free the model while the interpreter is intact (Llama.__del__ at shutdown raises).
        for res in ("_pbatch", "_pctx"):
            if getattr(self, res, None) is not None:
                getattr(self, res).close()
                setattr(self, res, None)
        if getattr(self, "llm", None) is not None:
            self.llm.close()
            self.llm = None
