"""Engine protocol tests on real backends: transformers (tiny local model and SmolLM2) and
llama.cpp (SmolLM2 GGUF). Continuation must equal one uninterrupted greedy sequence, and
teacher-forced scores must match a direct forward pass."""

import math

import numpy as np
import pytest
import torch

from heal.engines.base import SamplingParams, chat_prompt_ids, entropy_from_logits
from heal.engines.hf import HFEngine
from heal.engines.llamacpp import sample_token, step_stats

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24)
QUESTION = "Compute 17 + 25 - 8. Put the final answer in \\boxed{}."


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return HFEngine(tiny_model_dir, batch_size=3)


def test_entropy_of_known_distributions():
    uniform = np.zeros((1, 8))
    assert entropy_from_logits(uniform)[0] == pytest.approx(math.log(8))
    peaked = np.array([[0.0, -1e4, -1e4]])
    assert entropy_from_logits(peaked)[0] == pytest.approx(0.0, abs=1e-9)
    two = np.log(np.array([[0.25, 0.75]]))
    assert entropy_from_logits(two)[0] == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    logp, h = step_stats(two[0])
    assert h == pytest.approx(entropy_from_logits(two)[0]) and np.exp(logp).sum() == pytest.approx(1.0)


def test_numpy_sampler_follows_top_p_and_seed():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    p = SamplingParams(temperature=1.0, top_p=0.75)
    draws = {sample_token(logits, p, rng) for _ in range(300)}
    assert draws == {0, 1}  # 0.5 + 0.3 is the smallest set reaching 0.75: tokens 2 and 3 are outside
    p_all = SamplingParams(temperature=1.0, top_p=1.0)
    a = [sample_token(logits, p_all, np.random.default_rng(7)) for _ in range(5)]
    assert len(set(a)) == 1  # same seed, same draw
    assert sample_token(logits, SamplingParams(temperature=0.0), rng) == 0
    assert {sample_token(logits, SamplingParams(temperature=1.0, top_p=1.0, top_k=1), rng) for _ in range(50)} == {0}


def _check_engine_protocol(engine, prompt, score_kwargs=None):
    # 1. Greedy generation, with per-token stats.
    [[full]] = engine.generate([prompt], GREEDY)
    assert len(full.token_ids) > 4 and len(full.entropy) == len(full.logprobs) == len(full.token_ids)
    assert full.entropy_kind == "exact"
    # Exact entropy from real logits, never the log(vocab) of an empty score buffer.
    assert max(full.entropy) < math.log(len(engine.tokenizer)) - 0.5
    # 2. Continuation from a token-id prefix equals the uninterrupted greedy sequence.
    cut = len(full.token_ids) // 2
    cont_params = SamplingParams(temperature=0.0, max_new_tokens=GREEDY.max_new_tokens - cut)
    [[cont]] = engine.generate([prompt + full.token_ids[:cut]], cont_params)
    assert full.token_ids[:cut] + cont.token_ids == full.token_ids
    # 3. Teacher-forced scoring reproduces what generation recorded.
    scored = engine.score(prompt, full.token_ids, **(score_kwargs or {}))
    np.testing.assert_allclose(scored.entropy, full.entropy, atol=2e-3)
    np.testing.assert_allclose(scored.logprobs, full.logprobs, atol=2e-3)
    return full, scored


def test_hf_engine_protocol(hf_smollm2):
    prompt = chat_prompt_ids(hf_smollm2.tokenizer, QUESTION)
    full, scored = _check_engine_protocol(hf_smollm2, prompt)
    # Scores match a direct forward pass of the model.
    ids = torch.tensor([prompt + full.token_ids])
    with torch.no_grad():
        logits = hf_smollm2.model(ids).logits[0, len(prompt) - 1 : -1]
    logp = torch.log_softmax(logits.double(), -1)
    direct_lp = logp.gather(1, torch.tensor(full.token_ids)[:, None]).squeeze(1).numpy()
    direct_h = (-(logp.exp() * logp).sum(-1)).numpy()
    np.testing.assert_allclose(scored.logprobs, direct_lp, atol=1e-4)
    np.testing.assert_allclose(scored.entropy, direct_h, atol=1e-4)


def test_llamacpp_engine_protocol(llamacpp_smollm2):
    prompt = chat_prompt_ids(llamacpp_smollm2.tokenizer, QUESTION)
    # Scored one token per decode, llama.cpp reproduces its generation-time numbers exactly.
    full, _ = _check_engine_protocol(llamacpp_smollm2, prompt, score_kwargs={"chunk": 1})
    # Batched scoring (the default, much faster) goes through other matmul kernels: llama.cpp is not
    # batch-invariant, so entropies move by up to ~0.1 nat. docs/engines.md records this.
    batched = np.array(llamacpp_smollm2.score(prompt, full.token_ids).entropy)
    diff = np.abs(batched - np.array(full.entropy))
    assert diff.mean() < 0.05 and diff.max() < 0.3
    # Top-k estimates from the same logits: each split of the tail refines the partition, so
    # top-5 <= top-20 <= exact (merging outcomes never raises entropy).
    sc = llamacpp_smollm2.score(prompt, full.token_ids, topk=(5, 20))
    exact, e5, e20 = np.array(sc.entropy), np.array(sc.entropy_topk[5]), np.array(sc.entropy_topk[20])
    assert (e5 <= e20 + 1e-9).all() and (e20 <= exact + 1e-9).all() and (exact - e20).mean() < (exact - e5).mean()


def test_llamacpp_entropy_matches_transformers(llamacpp_smollm2, hf_smollm2):
    """Same text, two backends: the GGUF (quantized matmuls) against its dequantized fp32 copy."""
    prompt = chat_prompt_ids(hf_smollm2.tokenizer, QUESTION)
    [[c]] = hf_smollm2.generate([prompt], SamplingParams(temperature=0.6, max_new_tokens=48, seed=1))
    a = np.array(hf_smollm2.score(prompt, c.token_ids).entropy)
    b = np.array(llamacpp_smollm2.score(prompt, c.token_ids).entropy)
    assert np.abs(a - b).mean() < 0.05 and np.abs(a - b).max() < 0.4
    assert np.corrcoef(a, b)[0, 1] > 0.98


def test_llamacpp_seeds_are_per_sample(llamacpp_smollm2):
    prompt = chat_prompt_ids(llamacpp_smollm2.tokenizer, QUESTION)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=16)
    [batch] = llamacpp_smollm2.generate([prompt], params, n=3, seeds=[100])
    assert [c.seed for c in batch] == [100, 101, 102]
    [[again]] = llamacpp_smollm2.generate([prompt], params, seeds=[102])
    assert again.token_ids == batch[2].token_ids  # sample 2 is reproducible on its own
    assert len({tuple(c.token_ids) for c in batch}) > 1


def test_hf_batch_with_padding_matches_single(tiny):
    tok = tiny.tokenizer
    prompts = [chat_prompt_ids(tok, "hi"), chat_prompt_ids(tok, "a much longer question about numbers 1 2 3 4")]
    params = SamplingParams(temperature=0.0, max_new_tokens=12)
    batched = tiny.generate(prompts, params)
    for p, [c] in zip(prompts, batched):
        [[single]] = tiny.generate([p], params)
        assert c.token_ids == single.token_ids
        np.testing.assert_allclose(c.entropy, single.entropy, atol=1e-4)


def test_hf_n_samples_and_stop_handling(tiny):
    prompt = chat_prompt_ids(tiny.tokenizer, "hello")
    out = tiny.generate([prompt, prompt], SamplingParams(temperature=1.0, max_new_tokens=10, seed=3), n=2)
    assert [len(x) for x in out] == [2, 2]
    for c in (c for row in out for c in row):
        assert c.finish_reason in ("stop", "length") and len(c.token_ids) <= 10
        assert not set(c.token_ids) & tiny.eos  # the end-of-turn token is never part of a completion
        if c.finish_reason == "length":
            assert len(c.token_ids) == 10
    # With a stop token forced on the most likely next token, generation ends there, leaving it out.
    [[g]] = tiny.generate([prompt], SamplingParams(temperature=0.0, max_new_tokens=10))
    [[s]] = tiny.generate([prompt], SamplingParams(temperature=0.0, max_new_tokens=10, stop_token_ids=(g.token_ids[0],)))
    assert s.token_ids == [] and s.text == "" and s.finish_reason == "stop" and s.entropy == []


@pytest.fixture(scope="module")
def llamacpp_parallel(smollm2, hf_smollm2):
    from heal.engines.llamacpp import LlamaCppEngine

    eng = LlamaCppEngine(smollm2.gguf, tokenizer=hf_smollm2.tokenizer, n_ctx=512, parallel=3)
    yield eng
    eng.close()


def test_llamacpp_parallel_sequences(llamacpp_parallel, llamacpp_smollm2, hf_smollm2):
    """Several sequences decoded together: same protocol, prompt cache shared between them."""
    tok = llamacpp_parallel.tokenizer
    prompts = [chat_prompt_ids(tok, QUESTION), chat_prompt_ids(tok, "Name a prime number.")]
    out = llamacpp_parallel.generate(prompts, SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=20),
                                     n=2, seeds=[10, 20])
    assert [[c.seed for c in row] for row in out] == [[10, 11], [20, 21]]
    for row, prompt in zip(out, prompts):
        for c in row:
            assert 0 < len(c.token_ids) <= 20 and len(c.entropy) == len(c.token_ids)
            # Recorded entropy is as close to the exact fp32 value as single-stream llama.cpp is: the
            # Q4 matmuls differ per batch shape (not batch-invariant), by ~0.02-0.1 nat on this model.
            exact = np.array(hf_smollm2.score(prompt, c.token_ids).entropy)
            single = np.array(llamacpp_smollm2.score(prompt, c.token_ids, chunk=1).entropy)
            err_par, err_single = np.abs(np.array(c.entropy) - exact).mean(), np.abs(single - exact).mean()
            assert err_par < 0.15 and err_par < 2 * err_single + 0.03
    # Greedy continuation from a token-id prefix equals the uninterrupted sequence.
    prompt = prompts[0]
    [[full]] = llamacpp_parallel.generate([prompt], GREEDY)
    cut = len(full.token_ids) // 2
    [[cont]] = llamacpp_parallel.generate([prompt + full.token_ids[:cut]],
                                          SamplingParams(temperature=0.0, max_new_tokens=GREEDY.max_new_tokens - cut))
    assert full.token_ids[:cut] + cont.token_ids == full.token_ids


def test_llamacpp_parallel_refills_free_slots(llamacpp_parallel, hf_smollm2):
    """More jobs than slots: a slot whose sequence ends takes the next job (its own prompt cache
    reused, another slot's copied, or a fresh prompt decoded). Every completion's recorded entropy
    still matches the exact score of its own prompt + tokens, so no slot reads another's cache."""
    tok = llamacpp_parallel.tokenizer
    prompts = [chat_prompt_ids(tok, QUESTION), chat_prompt_ids(tok, "Name a prime number."),
               chat_prompt_ids(tok, "Say hi.")]
    out = llamacpp_parallel.generate(prompts, SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=12),
                                     n=3, seeds=[1, 5, 9])  # 9 jobs, 3 slots
    assert [[c.seed for c in row] for row in out] == [[1, 2, 3], [5, 6, 7], [9, 10, 11]]
    for row, prompt in zip(out, prompts):
        for c in row:
            assert 0 < len(c.token_ids) <= 12 and len(c.entropy) == len(c.token_ids)
            exact = np.array(hf_smollm2.score(prompt, c.token_ids).entropy)
            assert np.abs(np.array(c.entropy) - exact).mean() < 0.15
    # The same job alone draws from the same per-job generator: its first token (decoded from the
    # prompt alone in both runs) is the same.
    [[alone]] = llamacpp_parallel.generate([prompts[2]], SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=1),
                                           seeds=[11])
    assert alone.token_ids == out[2][2].token_ids[:1]
    # No tokens to generate: nothing sampled, as on the single stream.
    [[none]] = llamacpp_parallel.generate([prompts[0]], SamplingParams(max_new_tokens=0))
    assert none.token_ids == [] and none.finish_reason == "length"


def test_make_engine_batch_size_default_and_override(tiny_model_dir):
    from heal.config import engine_config
    from heal.engines import make_engine

    assert make_engine(engine_config(model=tiny_model_dir, engine="hf")).batch_size == 8  # unset: hf's default
    assert make_engine(engine_config(model=tiny_model_dir, engine="hf", batch_size=3)).batch_size == 3


# -- KV-cache memory -----------------------------------------------------------------------------

QWEN25_15B = {"num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "hidden_size": 1536}


def test_kv_cache_estimate_by_hand():
    from heal.engines.base import GiB, kv_cache_bytes, kv_shape_from_gguf_metadata, kv_shape_from_hf_config

    # Qwen2.5-1.5B: 28 layers x 2 KV heads x head_dim 1536 / 12 = 128, K and V, f16: 28,672 bytes a token.
    assert kv_shape_from_hf_config(QWEN25_15B) == (28, 2, 128)
    assert kv_cache_bytes(28, 2, 128, tokens=1) == 28 * 2 * 128 * 2 * 2 == 28672
    # A 32k context for 4 parallel sequences: 3.5 GiB.
    assert kv_cache_bytes(28, 2, 128, tokens=32768, sequences=4) == 28672 * 32768 * 4 == int(3.5 * GiB)
    assert kv_cache_bytes(28, 2, 128, tokens=1, bytes_per_value=4) == 57344  # fp32 (the hf engine on CPU)
    meta = {"general.architecture": "qwen2", "qwen2.block_count": "28", "qwen2.attention.head_count": "12",
            "qwen2.attention.head_count_kv": "2", "qwen2.embedding_length": "1536"}
    assert kv_shape_from_gguf_metadata(meta) == (28, 2, 128)
    # An explicit head_dim wins over hidden/heads (Qwen3, Gemma); no num_key_value_heads means MHA.
    assert kv_shape_from_hf_config({"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64,
                                    "head_dim": 32}) == (2, 4, 32)
    assert kv_shape_from_hf_config({"text_config": QWEN25_15B}) == (28, 2, 128)


def test_gguf_metadata_and_config_json_give_the_same_shape(smollm2):
    import json

    import llama_cpp
    from llama_cpp import _internals

    from heal.engines.base import kv_shape_from_gguf_metadata, kv_shape_from_hf_config

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = _internals.LlamaModel(path_model=smollm2.gguf, params=params, verbose=False)
    meta = model.metadata()
    model.close()
    with open(f"{smollm2.hf}/config.json") as f:
        config = json.load(f)
    assert kv_shape_from_gguf_metadata(meta) == kv_shape_from_hf_config(config) == (30, 3, 64)


def test_available_memory_reads_this_machine():
    from heal.engines.base import available_memory

    assert available_memory("cpu") > 0
    assert available_memory("mps") is None


def test_llamacpp_context_that_does_not_fit_in_ram_is_one_line_before_loading(smollm2, monkeypatch):
    from heal.engines import base
    from heal.engines.base import ContextError, GiB
    from heal.engines.llamacpp import LlamaCppEngine

    monkeypatch.setattr(base, "available_memory", lambda device="cpu": 1 * GiB)
    # SmolLM2: 30 x 3 x 64 x 2 x 2 bytes a token; n_ctx 32768 for the main context and 4 parallel ones.
    with pytest.raises(ContextError, match=r"n_ctx=32768 x 5 .*3\.5 GiB.*1\.0 GiB of RAM.*teacher\.n_ctx") as e:
        LlamaCppEngine(smollm2.gguf, tokenizer_path=smollm2.hf, n_ctx=32768, parallel=4)
    assert "\n" not in str(e.value)
    eng = LlamaCppEngine(smollm2.gguf, tokenizer_path=smollm2.hf, n_ctx=512)  # a small context fits
    eng.close()


def test_hf_batch_whose_kv_cache_does_not_fit_is_an_error_before_generating(tiny, monkeypatch):
    from heal.engines import base
    from heal.engines.base import ContextError

    prompt = chat_prompt_ids(tiny.tokenizer, "hello")
    # The tiny model: 2 layers x 2 KV heads x 16 x 2 x 4 bytes (fp32) = 512 bytes a token.
    need = 512 * (len(prompt) + 10) * 3
    monkeypatch.setattr(base, "available_memory", lambda device="cpu": need - 1)
    with pytest.raises(ContextError, match="3 rows x .*lower batch_size"):
        tiny.generate([prompt] * 3, SamplingParams(temperature=0.0, max_new_tokens=10))
    monkeypatch.setattr(base, "available_memory", lambda device="cpu": need)
    assert len(tiny.generate([prompt] * 3, SamplingParams(temperature=0.0, max_new_tokens=10))) == 3
