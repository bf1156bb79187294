"""A trained student as a GGUF llama.cpp runs (heal.models.export_gguf; eval.engine llamacpp): the
exported model computes what the transformers model computes, for a llama (q/k rows permuted) and
a qwen2 (biases, no permutation) architecture."""

import json

import numpy as np
import pytest


def _logits_hf(path, ids):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def _logits_llamacpp(gguf_path, ids):
    import llama_cpp

    llm = llama_cpp.Llama(str(gguf_path), n_ctx=128, n_threads=1, logits_all=True, verbose=False)
    llm.eval(ids)
    out = np.array(llm.scores[:len(ids)])
    llm.close()
    return out


def _perturbed_copy(src, dst, seed=0):
    """A "fine-tuned" model: src's weights plus noise (what a training run changes)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01 * p.std())
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


@pytest.mark.slow
def test_exported_llama_student_matches_transformers(tmp_path, smollm2):
    from transformers import AutoTokenizer

    from heal.models import export_file, export_gguf, resolve

    student = _perturbed_copy(smollm2.hf, tmp_path / "ckpt")
    stale = student / f"{export_file('f16')}.999999999.partial"  # an export that died (no such process)
    stale.write_bytes(b"half a file")
    out = export_gguf(student, smollm2.gguf, log=lambda *a: None)
    assert out == student / export_file("f16") and not stale.exists()
    assert not list(student.glob("*.partial"))
    assert resolve(str(out)).hf == str(student)  # a GGUF in a transformers folder takes its tokenizer
    ids = AutoTokenizer.from_pretrained(student)("Compute 12 + 7, then double it:")["input_ids"]
    hf, cpp = _logits_hf(student, ids), _logits_llamacpp(out, ids)
    assert (hf.argmax(-1) == cpp.argmax(-1)).all()
    assert np.abs(hf - cpp).max() < 0.15  # F16 weights; measured 0.05 on SmolLM2 itself
    # the original (not perturbed) weights would differ: the export carries the new ones
    assert np.abs(_logits_hf(smollm2.hf, ids) - cpp).max() > 0.15
    # q8_0: about half the bytes, still close
    q8 = export_gguf(student, smollm2.gguf, log=lambda *a: None, gguf_type="q8_0")
    assert q8.name == "model-q8_0.gguf" and q8.stat().st_size < 0.6 * out.stat().st_size
    q8_logits = _logits_llamacpp(q8, ids)
    assert (hf.argmax(-1) == q8_logits.argmax(-1)).mean() > 0.9 and np.abs(hf - q8_logits).mean() < 0.3  # max 2.0 measured


def _tiny_qwen2(tmp_path, smollm2):
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2.hf)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=False, rms_norm_eps=1e-6)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # qwen2's q/k/v biases are where a mapping mistake would hide: make them matter
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    path = tmp_path / "tiny-qwen2"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, cfg, model


def _reference_gguf(path, cfg, model, smollm2):
    """What a qwen2 alias's GGUF holds for the tiny model: qwen2 hyperparameters, SmolLM2's tokenizer
    fields, tensors of the right names and shapes (their values are never read by the export)."""
    import gguf

    src = gguf.GGUFReader(smollm2.gguf)
    w = gguf.GGUFWriter(str(path), "qwen2")
    for f in src.fields.values():
        if f.name.startswith("tokenizer."):
            w.add_key_value(f.name, f.contents(), f.types[0],
                            sub_type=f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, cfg.num_hidden_layers)
    for key, t in model.state_dict().items():
        w.add_tensor(names.get_name(key, try_suffixes=(".weight", ".bias")), np.zeros(tuple(t.shape), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.slow
def test_exported_qwen2_student_matches_transformers(tmp_path, smollm2):
    from transformers import AutoTokenizer

    from heal.models import export_gguf

    student, cfg, model = _tiny_qwen2(tmp_path, smollm2)
    reference = _reference_gguf(tmp_path / "reference.gguf", cfg, model, smollm2)
    out = export_gguf(student, reference, log=lambda *a: None)
    ids = AutoTokenizer.from_pretrained(student)("What is 3 * 4? Think step by step.")["input_ids"]
    hf, cpp = _logits_hf(student, ids), _logits_llamacpp(out, ids)
    assert (hf.argmax(-1) == cpp.argmax(-1)).mean() > 0.9 and np.abs(hf - cpp).max() < 0.05


@pytest.mark.slow
def test_export_refuses_another_model_size(tmp_path, smollm2, tiny_model_dir):
    from heal.models import export_gguf

    # the tiny llama has SmolLM2's tokenizer but other shapes: refused, naming the tensor, nothing written
    with pytest.raises(ValueError, match="another model size|no counterpart"):
        export_gguf(tiny_model_dir, smollm2.gguf, tmp_path / "x.gguf", log=lambda *a: None)
    assert not (tmp_path / "x.gguf").exists()


def test_eval_engine_llamacpp_takes_only_its_own_arguments():
    from heal.config import ConfigError, load_config, student_config

    cfg = load_config(None, {"eval.engine": "llamacpp", "eval.engine_args": {"threads": 1, "parallel": 4}})
    mc = student_config(cfg, "/some/ckpt")
    assert (mc.engine, mc.threads, mc.parallel, mc.model) == ("llamacpp", 1, 4, "/some/ckpt")
    with pytest.raises(ConfigError, match="max_model_len"):
        load_config(None, {"eval.engine": "llamacpp", "eval.engine_args": {"max_model_len": 4096}})


@pytest.mark.slow
def test_run_eval_on_llamacpp_exports_each_student_once(tmp_path, smollm2):
    from heal.config import load_config
    from heal.evaluation import run_eval
    from heal.models import export_file
    from heal.store import atomic_write_jsonl, read_jsonl

    student = _perturbed_copy(smollm2.hf, tmp_path / "ckpt")
    atomic_write_jsonl(tmp_path / "test.jsonl", [{"id": "t0", "question": "What is 2 + 2?", "answer": "4"}])
    atomic_write_jsonl(tmp_path / "run" / "problems.jsonl", [{"id": "x", "question": "What is 7 * 9?", "answer": "63"}])
    cfg = load_config(None, {"output_dir": str(tmp_path / "run"), "teacher.model": "smollm2-135m",
                             "teacher.engine": "llamacpp", "teacher.n_ctx": 512, "train.student": "smollm2-135m",
                             "eval.engine": "llamacpp", "eval.engine_args": {"n_ctx": 512, "threads": 1},
                             "eval.n_samples": 1, "eval.greedy": False, "sampling.max_new_tokens": 8,
                             "eval.data": {"source": str(tmp_path / "test.jsonl")}})
    logs = []
    run_eval(cfg, models={"m": str(student)}, progress=False, log=logs.append)
    assert (student / export_file("f16")).exists() and sum("exported" in m for m in logs) == 1
    recs = list(read_jsonl(tmp_path / "run" / "eval" / "evals.jsonl"))
    assert sorted(r["model"] for r in recs) == ["m", "teacher"] and all(r["n_tokens"] <= 8 for r in recs)
    assert json.loads((tmp_path / "run" / "eval" / "summary.json").read_text())["models"]["m"]["n"] == 1
