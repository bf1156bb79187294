"""Reasoning blocks: formats read from real chat templates, spans in token ids, answers read after
the block, and the template traps of training (a pre-filled `<think>`, a template that strips
reasoning from assistant turns, a student whose template differs from the teacher's)."""

import copy

import pytest
from helpers import PREFILL_TEMPLATE

from heal import reasoning
from heal.config import ReasoningConfig
from heal.engines.base import chat_prompt_ids
from heal.pace import tokenize_for_student

# An R1-distill-like template: the generation prompt ends inside the block ("<think>\n").
R1_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}<|im_start|>user\n{{ m['content'] }}<|im_end|>\n"
    "{% elif m['role'] == 'assistant' %}<|im_start|>assistant\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")
# A Qwen3-like template: the model writes "<think>" itself; enable_thinking=False pre-fills an empty
# block; reasoning in an assistant turn of the history is stripped when the template renders it.
QWEN3_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}<|im_start|>user\n{{ m['content'] }}<|im_end|>\n"
    "{% elif m['role'] == 'assistant' %}<|im_start|>assistant\n"
    "{{ m['content'].split('</think>')[-1].lstrip('\\n') }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")


def _tok(smollm2, template):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2.hf)
    tok.add_tokens(["<think>", "</think>"])  # one added token each, as in the Qwen and R1 tokenizers
    tok.chat_template = template
    return tok


@pytest.fixture(scope="module")
def r1_tok(smollm2):
    return _tok(smollm2, R1_TEMPLATE)


@pytest.fixture(scope="module")
def qwen3_tok(smollm2):
    return _tok(smollm2, QWEN3_TEMPLATE)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_prefill_is_read_from_the_chat_template(r1_tok, qwen3_tok):
    r1 = reasoning.resolve(ReasoningConfig(preset="r1"), r1_tok)
    q3 = reasoning.resolve(ReasoningConfig(preset="qwen3"), qwen3_tok)
    assert r1.enabled and r1.prefilled and r1.template_kwargs == {}
    assert q3.enabled and not q3.prefilled and q3.template_kwargs == {"enable_thinking": True}
    # the preset's guess loses to the template: an r1 preset on a Qwen3-like template is not pre-filled
    assert not reasoning.resolve(ReasoningConfig(preset="r1"), qwen3_tok).prefilled
    assert reasoning.resolve(ReasoningConfig(preset="none"), r1_tok) == reasoning.NONE
    no_think = reasoning.resolve(ReasoningConfig(preset="qwen3", template_kwargs={"enable_thinking": False}),
                                 qwen3_tok)
    text = qwen3_tok.decode(chat_prompt_ids(qwen3_tok, "q", None, no_think.template_kwargs))
    assert text.endswith("<think>\n\n</think>\n\n")  # template kwargs reach apply_chat_template


def test_spans_answer_and_truncation_in_token_ids(r1_tok, qwen3_tok):
    r1 = reasoning.resolve(ReasoningConfig(preset="r1"), r1_tok)
    ids = _ids(r1_tok, "First 2 + 2 = 4. Check: yes.</think>\n\nThe answer is \\boxed{4}.")
    sp = reasoning.spans(ids, r1_tok, r1)
    end = ids.index(r1_tok.convert_tokens_to_ids("</think>"))
    assert sp.closed and sp.reasoning == (0, end) and sp.answer == (end + 1, len(ids))
    assert r1_tok.decode(ids[slice(*sp.answer)]).strip() == "The answer is \\boxed{4}."
    assert reasoning.answer_text(r1_tok.decode(ids), r1) == "\n\nThe answer is \\boxed{4}."
    # cut off inside the block: no answer part, whatever \boxed{} the reasoning tried on the way
    cut = _ids(r1_tok, "Maybe \\boxed{5}? Let me check again")
    sp = reasoning.spans(cut, r1_tok, r1)
    assert not sp.closed and sp.answer is None and sp.reasoning == (0, len(cut))
    assert reasoning.answer_text("Maybe \\boxed{5}? Let me check again", r1) is None
    q3 = reasoning.resolve(ReasoningConfig(preset="qwen3"), qwen3_tok)
    ids = _ids(qwen3_tok, "<think>\nreason</think>\n\n\\boxed{1}")
    sp = reasoning.spans(ids, qwen3_tok, q3)
    assert qwen3_tok.decode(ids[slice(*sp.reasoning)]) == "\nreason"
    assert reasoning.spans(ids, qwen3_tok, reasoning.NONE).answer == (0, len(ids))  # an instruct model


def _train_text(tok, rows):
    [row] = rows
    labels = [t for t in row["labels"] if t != -100]
    return tok.decode(row["input_ids"]), tok.decode(labels)


def test_prefilled_start_tag_is_never_repeated(r1_tok):
    fmt = reasoning.resolve(ReasoningConfig(preset="r1"), r1_tok)
    completion = "2 + 2 = 4.</think>\n\n\\boxed{4}"
    ex = {"prompt": "What is 2 + 2?", "prompt_ids": None, "completion": completion,
          "completion_ids": _ids(r1_tok, completion)}
    for exact in (True, False):
        full, trained = _train_text(r1_tok, tokenize_for_student([ex], r1_tok, exact, teacher_format=fmt,
                                                                 student_format=fmt))
        assert full.count("<think>") == 1 and "<think>" not in trained  # the tag is the prompt's
        assert trained == completion + "<|im_end|>"  # reasoning, answer and end-of-turn in the loss


def test_teacher_and_student_templates_that_differ(r1_tok, qwen3_tok):
    r1 = reasoning.resolve(ReasoningConfig(preset="r1"), r1_tok)
    q3 = reasoning.resolve(ReasoningConfig(preset="qwen3"), qwen3_tok)
    # R1 teacher (wrote no start tag) -> Qwen3-style student (must write it)
    ex = {"prompt": "q", "prompt_ids": None, "completion": "work</think>\n\n\\boxed{1}", "completion_ids": None}
    full, trained = _train_text(qwen3_tok, tokenize_for_student([ex], qwen3_tok, False, teacher_format=r1,
                                                                student_format=q3))
    assert full.count("<think>") == 1 and trained.startswith("<think>\nwork</think>")
    # Qwen3-style teacher (wrote "<think>\n") -> R1 student (its prompt holds the tag already)
    ex = {"prompt": "q", "prompt_ids": None, "completion": "<think>\nwork</think>\n\n\\boxed{1}",
          "completion_ids": None}
    full, trained = _train_text(r1_tok, tokenize_for_student([ex], r1_tok, False, teacher_format=q3,
                                                             student_format=r1))
    assert full.count("<think>") == 1 and trained.startswith("work</think>")
    assert full.endswith("<think>\nwork</think>\n\n\\boxed{1}<|im_end|>")


def test_a_template_that_strips_reasoning_from_history_does_not_strip_training_text(qwen3_tok):
    q3 = reasoning.resolve(ReasoningConfig(preset="qwen3"), qwen3_tok)
    completion = "<think>\nthe long derivation</think>\n\n\\boxed{7}"
    rendered = qwen3_tok.apply_chat_template([{"role": "user", "content": "q"},
                                              {"role": "assistant", "content": completion}], tokenize=False)
    assert "the long derivation" not in rendered  # what assistant_only_loss-style rendering would train on
    ex = {"prompt": "q", "prompt_ids": None, "completion": completion, "completion_ids": _ids(qwen3_tok, completion)}
    _, trained = _train_text(qwen3_tok, tokenize_for_student([ex], qwen3_tok, True, teacher_format=q3,
                                                             student_format=q3))
    assert "the long derivation" in trained and trained.count("<think>") == 1


def test_stage0_counts_truncation_inside_the_reasoning_block(tmp_path):
    from heal.config import RunConfig
    from heal.stage0 import format_table, summarize
    from heal.store import atomic_write_jsonl

    run = tmp_path / "run"
    recs = [{"key": f"p0/{j}", "problem_id": "p0", "sample_index": j, "correct": j == 0, "truncated": j == 1,
             "truncated_in_reasoning": j == 1, "pred": "1" if j != 1 else None, "n_tokens": 3, "text": "...",
             "token_ids": [1, 2, 3]} for j in range(2)]
    atomic_write_jsonl(run / "samples.jsonl", recs)
    atomic_write_jsonl(run / "tiers.jsonl", [])
    s = summarize(RunConfig(output_dir=str(run), sample={"k": 2}), run, [{"id": "p0", "answer": "1"}])
    assert s["truncated_in_reasoning"] == 1
    assert "(1 inside the reasoning block)" in format_table(run)


def test_gear_never_repairs_a_trace_cut_off_in_its_reasoning():
    from heal.gear import select_failed

    samples = [{"sample_index": 0, "correct": False, "truncated": True, "truncated_in_reasoning": True, "pred": None},
               {"sample_index": 1, "correct": False, "truncated": False, "pred": "3"}]
    assert [s["sample_index"] for s in select_failed(copy.deepcopy(samples), 4)] == [1]


# A reasoning format whose tags are single tokens of SmolLM2's vocabulary (the tiny model's): the
# model writes the start tag itself (Qwen3-style), so the block starts one token into the trace.
TAGS = {"preset": "custom", "start": "<jupyter_start>", "end": "<jupyter_text>", "prefilled": False}


def test_gear_cuts_inside_the_reasoning_block(tmp_path, tiny_model_dir):
    from test_gear_e2e import QUIET, _cfg
    from transformers import AutoTokenizer

    from heal.gear import run_repair
    from heal.stage0 import run_sample
    from heal.store import atomic_write_jsonl, read_jsonl

    cfg = _cfg(tmp_path, tiny_model_dir, "hf", [{"id": "a", "question": "2+3?", "answer": "5"}],
               {"teacher": {"reasoning": TAGS},
                "gear": {"skip_truncated": False, "max_trajectories": 1, "continuations": 2, "backup": 0,
                         "locator": "entropy", "window": "all"},
                "sampling": {"max_new_tokens": 12}})
    run_sample(cfg, **QUIET)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    parts = ["<jupyter_start>", "2 + 3 = 5\n\n", "5 + 1 = 7\n\n", "So it is 7.", "<jupyter_text>",
             "\n\nThe answer:\n\n", "\\boxed{7}"]
    ids, ent, bounds = [], [], []
    for i, part in enumerate(parts):
        p_ids = tok(part, add_special_tokens=False)["input_ids"]
        bounds.append((len(ids), len(ids) + len(p_ids)))
        ids += p_ids
        # the surge is in step 1 of the block; the answer part surges far higher, but lies outside it
        ent += [{2: 2.0, 5: 6.0, 6: 6.0}.get(i, 0.1)] * len(p_ids)
    samples = list(read_jsonl(tmp_path / "run" / "samples.jsonl"))
    atomic_write_jsonl(tmp_path / "run" / "samples.jsonl",
                       [{**samples[0], "token_ids": ids, "text": tok.decode(ids), "entropy": ent, "correct": False,
                         "pred": "7", "truncated": False}])
    run_repair(cfg, **QUIET)
    recs = list(read_jsonl(tmp_path / "run" / "repairs.jsonl"))
    r0, r1 = bounds[0][1], bounds[4][0]
    assert recs[0]["reasoning_span"] == [r0, r1]
    assert all(r0 <= a < b <= r1 for a, b in recs[0]["step_spans"])  # the answer part is no step
    bp = recs[0]["breakpoint"]
    assert bp["step"] == 1 and bp["cut_token"] == bounds[1][1] == recs[0]["cut_token"]  # keeps "<start>2 + 3 = 5"
    assert recs[0]["hint_span"][0] == bounds[1][1]  # the hint goes inside the block
    for r in recs:  # the random model never closes the block: no answer part, no answer read
        if "<jupyter_text>" not in r["continuation"]:
            assert r["pred"] is None and r["correct"] is False


def test_pure_scores_reasoning_steps_and_the_answer_after_the_block(smollm2):
    from transformers import AutoTokenizer

    from heal.entropy import token_pieces
    from heal.pure import reasoning_steps

    tok = AutoTokenizer.from_pretrained(smollm2.hf)
    fmt = reasoning.resolve(ReasoningConfig(**TAGS), tok)
    text = "<jupyter_start>Try \\boxed{6}?\n\nNo: 2 + 3 = 5<jupyter_text>\n\nSo \\boxed{5}\n\nDone."
    ids = _ids(tok, text)
    pieces = token_pieces(tok, ids)
    steps, ans = reasoning_steps(ids, pieces, tok, fmt)
    close = ids.index(tok.convert_tokens_to_ids("<jupyter_text>"))
    assert steps[0][0] == 1 and steps[-1][1] == close and len(steps) == 2  # clipped at the end tag
    assert "".join(pieces[ans[0]:ans[1]]) == "5"  # the box after the block, not the one inside it
    plain_steps, plain_ans = reasoning_steps(ids, pieces, tok, reasoning.NONE)
    assert len(plain_steps) == 4 and "".join(pieces[plain_ans[0]:plain_ans[1]]) == "5"


@pytest.mark.slow
@pytest.mark.parametrize("prefill", [False, True], ids=["model-writes-start-tag", "template-prefills-start-tag"])
def test_reasoning_run_through_every_stage(tmp_path, tiny_model_dir, prefill):
    """sample -> hint -> repair -> filter -> train -> eval -> report on a tiny model whose outputs are
    reasoning traces: Stage 0's samples are replaced by hand-made traces (a random model writes none),
    every later stage runs for real on them."""
    import json
    import shutil

    from test_gear_e2e import QUIET, _cfg
    from transformers import AutoTokenizer

    from heal.pipeline import run_pipeline
    from heal.stage0 import run_sample, summarize
    from heal.store import atomic_write_jsonl, read_jsonl

    model = tmp_path / "tiny-reasoner"
    shutil.copytree(tiny_model_dir, model)
    tok = AutoTokenizer.from_pretrained(model)
    if prefill:
        tok.chat_template = PREFILL_TEMPLATE
        tok.save_pretrained(model)
    problems = [{"id": f"p{i}", "question": f"What is {i} + {i + 2}?", "answer": str(2 * i + 2)} for i in range(4)]
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"id": f"t{i}", "question": f"Add {i} and 9.", "answer": str(i + 9)}) + "\n"
                            for i in range(2)))
    tags = {k: v for k, v in TAGS.items() if k != "prefilled"}  # the pre-fill is read from the template
    cfg = _cfg(tmp_path, str(model), "hf", problems,
               {"teacher": {"reasoning": tags}, "sample": {"k": 2},
                "gear": {"skip_truncated": False, "max_trajectories": 1, "continuations": 1},
                "guided": {"samples": 1}, "pure": {"threshold": 100.0},
                "sampling": {"max_new_tokens": 8},
                "train": {"student": str(model), "methods": ["sft_rs", "heal"], "batch_size": 2, "progress": False,
                          "stages": {k: {"epochs": 1, "learning_rate": 1e-4} for k in ("I", "II", "III")},
                          "single": {"epochs": 1, "learning_rate": 1e-4}},
                "eval": {"data": {"source": str(test)}, "n_samples": 1, "greedy": False}})
    run_sample(cfg, **QUIET)
    start = "" if prefill else "<jupyter_start>"
    samples = []
    for r in read_jsonl(tmp_path / "run" / "samples.jsonl"):
        i, j = int(r["problem_id"][1:]), r["sample_index"]
        right = j == 0 and i < 2  # p0, p1 solved once; p2, p3 corner
        value = 2 * i + 2 if right else 2 * i + 3
        text = f"{start}\n{i} + {i + 2} = {value}\n\nChecked.<jupyter_text>\n\nSo \\boxed{{{value}}}"
        ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
        samples.append({**r, "text": text, "token_ids": ids, "entropy": [0.5] * len(ids), "correct": right,
                        "pred": str(value), "truncated": False})
    atomic_write_jsonl(tmp_path / "run" / "samples.jsonl", samples)
    summarize(cfg, tmp_path / "run", list(read_jsonl(tmp_path / "run" / "problems.jsonl")))
    report = run_pipeline(cfg, **QUIET)
    run = tmp_path / "run"
    assert report.exists() and (run / "eval" / "summary.json").exists()
    reps = list(read_jsonl(run / "repairs.jsonl"))
    assert reps and all(r["reasoning_span"] is not None for r in reps)
    assert all(r["reasoning_span"][0] == (0 if prefill else 1) for r in reps)
    # The hint sits inside the block: after the start tag, before the block's end.
    assert all(r["reasoning_span"][0] <= r["hint_span"][0] <= r["reasoning_span"][1] for r in reps)
    d1 = list(read_jsonl(run / "data" / "D1.jsonl"))
    assert len(d1) == 2 and all(("<jupyter_start>" in ex["completion"]) != prefill for ex in d1)
    stage = json.loads((run / "checkpoints" / "heal" / "stage-I" / "heal_stage.json").read_text())
    assert stage["examples"] == 2
