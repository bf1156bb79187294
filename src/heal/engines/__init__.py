"""Engines: one small protocol (base.Engine), one module per backend."""

from heal.engines.base import Completion, ContextError, Engine, EngineError, SamplingParams, Scored, chat_prompt_ids

__all__ = ["Completion", "ContextError", "Engine", "EngineError", "SamplingParams", "Scored", "chat_prompt_ids", "engine_for", "make_engine"]

from contextlib import contextmanager


def make_engine(model_cfg) -> Engine:
    """Build the engine an engine config names (heal.config: HFConfig, LlamaCppConfig, OpenAIConfig,
    VLLMConfig). Models are resolved offline (see heal.models)."""
    from heal.models import resolve

    c = model_cfg
    paths = resolve(c.model)
    if c.engine == "hf":
        if paths.hf is None:
            raise ValueError(f"engine 'hf' needs a transformers folder; {c.model} is a bare GGUF")
        from heal.engines.hf import HFEngine

        return HFEngine(paths.hf, device=c.device, dtype=c.dtype, batch_size=c.batch_size)
    if c.engine == "llamacpp":
        if paths.gguf is None:
            raise ValueError(
                f"engine 'llamacpp' needs a GGUF file; {c.model} has none (use an alias from "
                f"`heal models list`, a .gguf path, or a folder holding one)"
            )
        from heal.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(paths.gguf, tokenizer_path=paths.hf, n_ctx=c.n_ctx, threads=c.threads,
                              parallel=c.parallel)
    if c.engine == "openai":
        if not c.base_url:
            raise ValueError("engine 'openai' needs base_url (the server, e.g. http://localhost:8000)")
        from transformers import AutoTokenizer

        from heal.engines.openai import OpenAIEngine

        return OpenAIEngine(base_url=c.base_url, model=c.served_model,
                            tokenizer=AutoTokenizer.from_pretrained(paths.hf or c.model),
                            api_key_env=c.api_key_env, top_logprobs=c.top_logprobs, concurrency=c.concurrency,
                            timeout_s=c.timeout_s, max_retries=c.max_retries, prompt_format=c.prompt_format)
    if c.engine == "vllm":
        from heal.engines.vllm import VLLMEngine

        return VLLMEngine(model_path=paths.hf or c.model, tokenizer_path=paths.hf, top_logprobs=c.top_logprobs,
                          tensor_parallel_size=c.tensor_parallel_size, data_parallel_size=c.data_parallel_size,
                          dtype=c.dtype, engine_args=c.engine_args, batch_size=c.batch_size)
    raise ValueError(f"unknown engine {c.engine!r}")


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
