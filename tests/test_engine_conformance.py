"""What every engine promises (heal.engines.base), checked on every engine against its real backend
with SmolLM2-135M: transformers, llama.cpp in-process (single stream and parallel sequences),
openai against llama.cpp's own server on loopback, and vLLM (vllm-cpu) in its own venv:

    .venv/bin/python -m pytest tests/test_engine_conformance.py           # hf, llamacpp, openai
    HEAL_REQUIRE_VLLM=1 .venv-vllm/bin/python -m pytest tests/test_engine_conformance.py -k vllm

(`make test` runs both.) Stages rely on exactly these properties and on nothing engine-specific."""

import os

import numpy as np
import pytest

from heal.engines.base import ContextError, Engine, SamplingParams, chat_prompt_ids

STOPS = "What is 2 + 3? Answer with one number."  # SmolLM2 answers "2 + 3 = 5" and ends its turn
LONG = "Say hello."  # a longer answer, for truncation
ENTROPY_KIND = {"hf": "exact", "llamacpp": "exact", "llamacpp-parallel": "exact", "openai": "topk", "vllm": "topk"}
# Engines whose sample j depends only on its own seed (seeds[i] + j), not on what shares its batch.
PER_SAMPLE_SEEDS = {"llamacpp", "openai", "vllm"}
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=48)


@pytest.fixture(scope="module", params=["hf", "llamacpp", "llamacpp-parallel",
                                        pytest.param("openai", marks=pytest.mark.slow),
                                        pytest.param("vllm", marks=pytest.mark.slow)])
def engine(request, smollm2):
    kind = request.param
    if kind == "vllm":
        if os.environ.get("HEAL_REQUIRE_VLLM") != "1":
            pytest.importorskip("vllm", reason="the vllm engine runs in its own venv: make test-vllm")
        from heal.engines.vllm import VLLMEngine

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        eng = VLLMEngine(smollm2.hf, dtype="float32", engine_args={"max_model_len": 1024})
    elif kind == "hf":
        from heal.engines.hf import HFEngine

        eng = HFEngine(smollm2.hf, batch_size=4)
    elif kind.startswith("llamacpp"):
        from heal.engines.llamacpp import LlamaCppEngine

        eng = LlamaCppEngine(smollm2.gguf, tokenizer_path=smollm2.hf, n_ctx=1024,
                             parallel=2 if kind == "llamacpp-parallel" else 1)
    else:
        from test_openai_engine import _free_port, start_server
        from transformers import AutoTokenizer

        from heal.engines.openai import OpenAIEngine

        port = _free_port()
        server = start_server(smollm2.gguf, port)
        request.addfinalizer(lambda: (server.kill(), server.wait()))
        eng = OpenAIEngine(f"http://127.0.0.1:{port}", None, AutoTokenizer.from_pretrained(smollm2.hf), max_retries=0)
    eng.kind = kind
    yield eng
    eng.close()
    eng.close()  # closing twice is harmless (atexit and a stage's `finally` may both do it)


def _prompt(engine, question=STOPS):
    return chat_prompt_ids(engine.tokenizer, question)


def _check(engine, c, params, record_entropy=True):
    """The per-completion contract."""
    tok = engine.tokenizer
    assert tok.decode(c.token_ids, skip_special_tokens=True) == c.text
    assert not set(c.token_ids) & (engine.eos | set(params.stop_token_ids))  # never the stop token
    assert c.finish_reason in ("stop", "length") and c.truncated == (c.finish_reason == "length")
    assert len(c.token_ids) <= params.max_new_tokens
    if c.truncated:
        assert len(c.token_ids) == params.max_new_tokens
    if record_entropy:
        assert len(c.logprobs) == len(c.entropy) == len(c.token_ids)
        assert c.entropy_kind == ENTROPY_KIND[engine.kind]
        assert all(lp <= 1e-4 for lp in c.logprobs) and all(h >= -1e-6 for h in c.entropy)
    else:
        assert c.logprobs is None and c.entropy is None and c.entropy_kind is None


def test_attributes(engine):
    assert isinstance(engine, Engine)
    assert engine.name == engine.kind.split("-")[0]
    assert engine.batch_size >= 1
    end = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert isinstance(engine.eos, set) and end in engine.eos and all(isinstance(t, int) for t in engine.eos)
    # llama.cpp's server does not report its context (no max_model_len in /v1/models): None, unknown.
    expected = {"hf": 8192, "llamacpp": 1024, "llamacpp-parallel": 1024, "openai": None, "vllm": 1024}
    assert engine.context_length == expected[engine.kind]


def test_n_completions_per_prompt_with_their_seeds(engine):
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=16)
    prompts = [_prompt(engine), _prompt(engine, LONG)]
    out = engine.generate(prompts, params, n=2, seeds=[3, 40])
    assert [len(row) for row in out] == [2, 2]
    # hf draws a whole batch from one generator, seeded with the batch's first seed (recorded).
    seeds = [[3, 3], [3, 3]] if engine.kind == "hf" else [[3, 4], [40, 41]]
    assert [[c.seed for c in row] for row in out] == seeds
    for c in (c for row in out for c in row):
        _check(engine, c, params)


def test_end_of_turn_is_left_out(engine):
    prompt = _prompt(engine)
    [[c]] = engine.generate([prompt], GREEDY)
    _check(engine, c, GREEDY)
    assert c.finish_reason == "stop" and not c.truncated and c.text.strip().endswith("5")
    assert not c.text.endswith("<|im_end|>")
    # The turn ended right after these ids: continuing from them ends it again at once, empty.
    [[after]] = engine.generate([prompt + c.token_ids], SamplingParams(temperature=0.0, max_new_tokens=4))
    assert after.token_ids == [] and after.text == "" and after.finish_reason == "stop"
    # A call's own stop token ends the completion before it, leaving it out too.
    k = next(i for i, t in enumerate(c.token_ids) if i > 0 and t not in c.token_ids[:i])
    params = SamplingParams(temperature=0.0, max_new_tokens=48, stop_token_ids=(c.token_ids[k],))
    [[cut]] = engine.generate([prompt], params)
    _check(engine, cut, params)
    assert cut.token_ids == c.token_ids[:k] and cut.finish_reason == "stop"


def test_max_new_tokens_truncates(engine):
    params = SamplingParams(temperature=0.0, max_new_tokens=5)
    [[c]] = engine.generate([_prompt(engine, LONG)], params)
    _check(engine, c, params)
    assert c.truncated and c.finish_reason == "length" and len(c.token_ids) == 5


def test_seeds_reproduce_samples(engine):
    prompt = _prompt(engine, LONG)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=12)
    [a] = engine.generate([prompt], params, n=3, seeds=[100])
    [b] = engine.generate([prompt], params, n=3, seeds=[100])
    assert [c.token_ids for c in a] == [c.token_ids for c in b]  # same call, same seeds: same samples
    assert len({tuple(c.token_ids) for c in a}) > 1  # the n samples differ
    if engine.kind in PER_SAMPLE_SEEDS:
        [[alone]] = engine.generate([prompt], params, seeds=[102])
        assert alone.token_ids == a[2].token_ids  # sample 2 is reproducible on its own


def test_record_entropy_off(engine):
    prompt = _prompt(engine)
    [[on]] = engine.generate([prompt], GREEDY)
    [[off]] = engine.generate([prompt], GREEDY, record_entropy=False)
    _check(engine, off, GREEDY, record_entropy=False)
    assert off.token_ids == on.token_ids


def test_score_gives_one_value_per_target_token(engine):
    prompt = _prompt(engine)
    [[c]] = engine.generate([prompt], GREEDY)
    s = engine.score(prompt, c.token_ids)
    assert len(s.logprobs) == len(s.entropy) == len(c.token_ids)
    # The same distributions as generation saw (llama.cpp's batched scoring and its server's
    # prefill are not batch-invariant: close, not equal; the engines' own tests pin exactness).
    assert np.abs(np.array(s.logprobs) - np.array(c.logprobs)).mean() < 0.1
    assert np.abs(np.array(s.entropy) - np.array(c.entropy)).mean() < 0.1
    # An old record that ends with the end-of-turn token scores it too: one value per target token.
    end = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    if engine.kind != "openai":  # servers leave special tokens out of the echo
        s_end = engine.score(prompt, c.token_ids + [end])
        assert len(s_end.logprobs) == len(c.token_ids) + 1 and s_end.logprobs[-1] > np.log(0.5)


def test_prompt_that_does_not_fit_is_a_context_error(engine):
    filler = engine.tokenizer(" hello", add_special_tokens=False)["input_ids"]
    n = (engine.context_length or 1024) + 8  # the openai server was started with n_ctx 1024
    prompt = _prompt(engine) + filler * n
    with pytest.raises(ContextError):
        engine.generate([prompt], SamplingParams(temperature=0.0, max_new_tokens=4))
    [[c]] = engine.generate([_prompt(engine)], GREEDY)  # the engine is still usable afterwards
    assert c.finish_reason == "stop"
