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

from heal.config import engine_config, load_config
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
    eng = make_engine(engine_config(model="smollm2-135m", engine="openai", base_url=url, max_retries=0))
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


# -- our parsing of what servers report (a local stub of each server's JSON) -------------------------

@pytest.fixture
def stub_server():
    """An HTTP server on loopback answering GET paths with fixed JSON (others: 404) and POST
    /v1/completions with a fixed status and body."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    routes: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status, payload):
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send(200, routes[self.path]) if self.path in routes else self._send(404, {"detail": "Not Found"})

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._send(*routes.get(("POST", self.path), (404, {})))

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", routes
    httpd.shutdown()
    httpd.server_close()


def _stub_engine(url):
    from types import SimpleNamespace

    from heal.engines.openai import OpenAIEngine

    return OpenAIEngine(url, None, SimpleNamespace(eos_token_id=2), max_retries=0, timeout_s=5)


@pytest.mark.parametrize("server_kind, routes, ctx", [
    # vLLM, and SGLang since it lists max_model_len in /v1/models
    ("vllm", {"/v1/models": {"data": [{"id": "m", "root": "m", "max_model_len": 32768}]}}, 32768),
    # older SGLang: no max_model_len in the model card; the server args carry context_length
    ("sglang-old", {"/v1/models": {"data": [{"id": "m", "root": "m"}]},
                    "/get_server_info": {"context_length": 16384, "max_total_num_tokens": 500000}}, 16384),
    ("sglang", {"/v1/models": {"data": [{"id": "m", "root": "m", "max_model_len": None}]},
                "/server_info": {"context_length": 40960, "max_total_num_tokens": 900000}}, 40960),
    # SGLang without --context-length: the server args say null, nothing else says the context
    ("sglang-unset", {"/v1/models": {"data": [{"id": "m"}]}, "/server_info": {"context_length": None}}, None),
    # llama.cpp's own server: per-slot n_ctx in /props
    ("llama-server", {"/v1/models": {"data": [{"id": "m", "object": "model"}]},
                      "/props": {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 4}}, 4096),
    # llama-cpp-python's server: says nothing
    ("llama-cpp-python", {"/v1/models": {"data": [{"id": "m", "object": "model", "owned_by": "me"}]}}, None),
])
def test_context_length_as_each_server_reports_it(stub_server, server_kind, routes, ctx):
    url, served = stub_server
    served.update(routes)
    eng = _stub_engine(url)
    assert eng.model == "m" and eng.context_length == ctx


@pytest.mark.parametrize("message", [
    "This model's maximum context length is 1024 tokens. However, you requested 1100 tokens.",  # vLLM, llama-cpp-python
    "The input (1100 tokens) is longer than the model's context length (1024 tokens).",  # SGLang
    "the request exceeds the available context size, try increasing it",  # llama.cpp's server
])
def test_a_server_refusing_a_long_prompt_is_a_context_error(stub_server, message):
    from heal.engines.base import ContextError

    url, served = stub_server
    served.update({"/v1/models": {"data": [{"id": "m"}]},
                   ("POST", "/v1/completions"): (400, {"error": {"message": message, "code": 400}})})
    eng = _stub_engine(url)
    eng.prompt_format = "token_ids"
    with pytest.raises(ContextError, match="context"):
        eng.generate([[1, 2, 3]], SamplingParams(max_new_tokens=4))
    served[("POST", "/v1/completions")] = (400, {"error": {"message": "temperature must be >= 0"}})
    with pytest.raises(EngineError, match="temperature"):
        eng.generate([[1, 2, 3]], SamplingParams(max_new_tokens=4))
