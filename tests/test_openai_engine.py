"""The openai engine against a real OpenAI-compatible server (llama.cpp's, serving SmolLM2's GGUF)
started by the test on loopback; killed mid-run, a stage resumes with nothing lost."""

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
import yaml

from heal.config import ModelConfig, load_config
from heal.engines import make_engine
from heal.engines.base import SamplingParams, chat_prompt_ids
from heal.engines.base import EngineError
from heal.store import read_jsonl

QUESTION = "Compute 17 + 25 - 8. Put the final answer in \\boxed{}."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(gguf: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "1024", "--n_threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("llama.cpp server did not come up")


@pytest.fixture(scope="module")
def server(smollm2):
    port = _free_port()
    proc = start_server(smollm2.gguf, port)
    yield f"http://127.0.0.1:{port}", proc
    proc.kill()
    proc.wait()


@pytest.mark.slow
def test_openai_engine_protocol(server, hf_smollm2):
    url, _ = server
    eng = make_engine(ModelConfig(model="smollm2-135m", engine="openai", base_url=url, max_retries=0))
    prompt = chat_prompt_ids(eng.tokenizer, QUESTION)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=24)
    [[full]] = eng.generate([prompt], greedy)
    assert full.entropy_kind == "topk" and len(full.entropy) == len(full.logprobs) == len(full.token_ids) > 4
    # Continuation from token ids: the server reads the decoded prefix back as exactly those ids
    # (checked by the engine), and the new text starts right where the prefix ends. Greedy tokens
    # after the cut may differ: llama.cpp is not batch-invariant (prefill vs one-token decode).
    cut = len(full.token_ids) // 2
    [[cont]] = eng.generate([prompt + full.token_ids[:cut]], greedy)
    [[again]] = eng.generate([prompt + full.token_ids[:cut]], greedy)
    assert cont.token_ids == again.token_ids  # deterministic
    assert eng.tokenizer.decode(full.token_ids[:cut] + cont.token_ids).startswith(eng.tokenizer.decode(full.token_ids[:cut]))
    # Teacher-forced scoring lines up with what generation reported.
    scored = eng.score(prompt, full.token_ids)
    np.testing.assert_allclose(scored.logprobs, full.logprobs, atol=0.15)
    # The top-k estimate is a lower bound of the exact entropy, up to the GGUF's quantization.
    exact = np.array(hf_smollm2.score(prompt, full.token_ids).entropy)
    est = np.array(scored.entropy)
    assert (est <= exact + 0.6).all() and (exact - est).mean() > -0.05
    # Seeds: one per sample.
    out = eng.generate([prompt], SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=10), n=3, seeds=[5])
    assert [c.seed for c in out[0]] == [5, 6, 7]


@pytest.mark.slow
def test_dead_server_is_a_clear_error_and_sampling_resumes(tmp_path, smollm2):
    port = _free_port()
    proc = start_server(smollm2.gguf, port)
    problems = [{"id": f"p{i}", "question": f"What is {i} + 2?", "answer": str(i + 2)} for i in range(4)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))
    cfg = {"output_dir": str(tmp_path / "run"), "data": {"source": str(tmp_path / "p.jsonl")},
           "teacher": {"model": "smollm2-135m", "engine": "openai", "base_url": f"http://127.0.0.1:{port}",
                       "max_retries": 1, "timeout_s": 20, "concurrency": 2},
           "sampling": {"max_new_tokens": 24}, "sample": {"k": 3}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "heal.cli", "sample", "-c", str(path), "--no-progress"]
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = tmp_path / "run" / "samples.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (samples.exists() and samples.read_text().count("\n") >= 2):
        time.sleep(0.1)
    proc.kill()  # the server dies mid-run
    proc.wait()
    _, err = run.communicate(timeout=120)
    assert run.returncode != 0 and f"127.0.0.1:{port}" in err  # the error names the server
    before = {r["key"]: r for r in read_jsonl(samples)}
    assert 2 <= len(before) < 12
    proc = start_server(smollm2.gguf, port)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        proc.kill()
        proc.wait()
    assert res.returncode == 0, res.stderr[-2000:]
    after = list(read_jsonl(samples))
    assert len(after) == len({r["key"] for r in after}) == 12
    assert all(r == before[r["key"]] for r in after if r["key"] in before)
