"""Engines: one small protocol (base.Engine), one module per backend."""

from heal.engines.base import Completion, ContextError, Engine, EngineError, SamplingParams, Scored, chat_prompt_ids

__all__ = ["Completion", "ContextError", "Engine", "EngineError", "SamplingParams", "Scored", "chat_prompt_ids", "engine_for", "make_engine"]

from contextlib import contextmanager


def make_engine(model_cfg) -> Engine:
    """Build the engine a ModelConfig names. Models are resolved offline (see heal.models)."""
    from heal.models import resolve

    paths = resolve(model_cfg.model)
    if model_cfg.engine == "hf":
        if paths.hf is None:
            raise ValueError(f"engine 'hf' needs a transformers folder; {model_cfg.model} is a bare GGUF")
        from heal.engines.hf import HFEngine

        return HFEngine(paths.hf, device=model_cfg.device, dtype=model_cfg.dtype, batch_size=model_cfg.batch_size)
    if model_cfg.engine == "llamacpp":
        if paths.gguf is None:
            raise ValueError(
                f"engine 'llamacpp' needs a GGUF file; {model_cfg.model} has none (use an alias from "
                f"`heal models list`, a .gguf path, or a folder holding one)"
            )
        from heal.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(paths.gguf, tokenizer_path=paths.hf, n_ctx=model_cfg.n_ctx, threads=model_cfg.threads,
                              parallel=model_cfg.parallel)
    if model_cfg.engine == "openai":
        if not model_cfg.base_url:
            raise ValueError("engine 'openai' needs base_url (the server, e.g. http://localhost:8000)")
        from transformers import AutoTokenizer

        from heal.engines.openai import OpenAIEngine

        tok = AutoTokenizer.from_pretrained(paths.hf or model_cfg.model)
        return OpenAIEngine(model_cfg.base_url, model_cfg.served_model, tok, model_cfg.api_key_env,
                            model_cfg.top_logprobs, model_cfg.concurrency, model_cfg.timeout_s,
                            model_cfg.max_retries, model_cfg.prompt_format)
    if model_cfg.engine == "vllm":
        from heal.engines.vllm import VLLMEngine

        return VLLMEngine(paths.hf or model_cfg.model, paths.hf, model_cfg.top_logprobs,
                          model_cfg.tensor_parallel_size, model_cfg.data_parallel_size,
                          model_cfg.dtype, model_cfg.engine_args, batch_size=model_cfg.batch_size)
    raise ValueError(f"unknown engine {model_cfg.engine!r}")


@contextmanager
def engine_for(model_cfg, engine: Engine | None = None):
    """Use the engine a caller passed in (it stays open), or build one from `model_cfg` and close it
    when the stage ends, error or not."""
    if engine is not None:
        yield engine
        return
    engine = make_engine(model_cfg)
    try:
        yield engine
    finally:
        engine.close()
