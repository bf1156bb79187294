"""Breakpoint locators (heal.locate): the choice rules by hand, and rollout / judge through a fake
engine that speaks the engine protocol."""

from types import SimpleNamespace

import pytest

from heal.config import GearConfig
from heal.engines.base import Completion, Scored
from heal.locate import cut_before, judge_margins, judge_step, judge_suffix_ids, locate, random_step, rollout_step

SPANS = [(0, 4), (4, 9), (9, 12), (12, 20)]  # four steps of a 20-token trajectory


def test_cut_before_keeps_the_steps_before_b():
    bp = cut_before(SPANS, 2, 0, "rollout", 0.5, [0, 1, 2, 3])
    assert (bp.kept_steps, bp.cut_token, bp.restart, bp.token) == (2, 9, False, 9)
    bp = cut_before(SPANS, 2, 1, "random", 0.0, [1, 2])
    assert (bp.kept_steps, bp.cut_token, bp.restart) == (1, 4, False)
    bp = cut_before(SPANS, 0, 0, "judge", 3.0, [0, 1, 2, 3])
    assert (bp.kept_steps, bp.cut_token, bp.restart) == (0, 0, True)


def test_rollout_cuts_where_success_drops_most():
    # v = [.5, .5, 0] then the failed trajectory (0): drops 0, .5, 0 -> step 1 is the culprit.
    assert rollout_step([0.5, 0.5, 0.0]) == 1
    # drops -.5, 0, .5: success holds until step 2 is kept.
    assert rollout_step([0.0, 0.5, 0.5]) == 2
    # Nothing ever succeeds: every drop 0, ties to the earliest, a restart.
    assert rollout_step([0.0, 0.0, 0.0]) == 0
    # drops .5, .5, 0, 0 tie: the boundary with more success before it (v = 1 at k = 0).
    assert rollout_step([1.0, 0.5, 0.0, 0.0]) == 0


def test_judge_cuts_before_the_first_step_judged_incorrect():
    assert judge_step([-2.0, -1.0, 0.5, 3.0]) == 2
    assert judge_step([-2.0, -1.0, 0.5, 3.0], threshold=1.0) == 3
    assert judge_step([-2.0, -0.5, -3.0, -0.5]) == 1  # none incorrect: the least correct, earliest on ties


def test_random_step_is_seeded_and_stays_in_the_window():
    cands = [1, 2, 3]
    assert random_step(cands, 7) == random_step(cands, 7)
    draws = {random_step(cands, s) for s in range(50)}
    assert draws == {1, 2, 3}


class FakeTok:
    """Characters are tokens (id = ord); a chat template with visible role markers."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)

    def apply_chat_template(self, msgs, add_generation_prompt=True, tokenize=False):
        text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in msgs)
        return text + ("<assistant>" if add_generation_prompt else "")


class FakeEngine:
    """generate: a continuation is correct ("\\boxed{5}") iff its prompt keeps fewer than 2 steps of
    TRAJ; score: the verdict "incorrect" is likelier iff the judged context contains "BAD"."""

    name, batch_size = "fake", 1

    def __init__(self, prompt_len):
        self.tokenizer, self.prompt_len, self.calls = FakeTok(), prompt_len, []

    def generate(self, prompts, params, n=1, record_entropy=True, seeds=None):
        out = []
        for p in prompts:
            kept = "".join(chr(i) for i in p[self.prompt_len:])
            text = "\\boxed{5}" if kept.count("\n\n") < 2 else "\\boxed{7}"
            out.append([Completion(token_ids=[ord(c) for c in text], text=text, finish_reason="stop")] * n)
        return out

    def score(self, prompt, completion):
        self.calls.append((len(prompt), len(completion)))
        ctx = "".join(chr(i) for i in prompt)
        bad = "BAD" in ctx.split("<user>")[0]
        said = "".join(chr(i) for i in completion)
        good_word = (said == "correct") != bad
        return Scored(logprobs=[-0.1 if good_word else -3.0] + [0.0] * (len(completion) - 1))


STEPS = ["a = 1\n\n", "b = 2\n\n", "BAD step\n\n", "so \\boxed{7}"]


def _traj():
    text = "".join(STEPS)
    spans, pos = [], 0
    for s in STEPS:
        spans.append((pos, pos + len(s)))
        pos += len(s)
    return [ord(c) for c in text], spans


def test_judge_suffix_is_what_the_template_adds_after_the_answer():
    ids = judge_suffix_ids(FakeTok(), "Is it right?")
    assert "".join(map(chr, ids)) == "</assistant><user>Is it right?</user><assistant>"


def test_judge_margins_and_cost_on_a_fake_engine():
    traj, spans = _traj()
    eng = FakeEngine(prompt_len=3)
    suffix, yes, no = [ord("?")], [ord(c) for c in "correct"], [ord(c) for c in "incorrect"]
    margins, forced = judge_margins(eng, [1, 2, 3], traj, spans, suffix, yes, no)
    assert margins == pytest.approx([-2.9, -2.9, 2.9, 2.9])  # steps 2 and 3 see "BAD" before them
    assert forced == len(traj) + 4 * (1 + 7 + 9)  # every step once, then question + both verdicts per step
    assert len(eng.calls) == 8


def test_locate_rollout_and_judge_through_the_engine_protocol():
    traj, spans = _traj()
    prompt = [1, 2, 3]
    eng = FakeEngine(prompt_len=len(prompt))
    g = GearConfig(window="all", backup=1, rollout_samples=2)
    common = dict(entropy=[0.1] * len(traj), spans=spans, pieces=[chr(i) for i in traj], gear_cfg=g,
                  steps=STEPS, answer="5", question="q", engine=eng, prompt_ids=prompt, traj_ids=traj,
                  params=SimpleNamespace(), verify=lambda text: text.endswith("\\boxed{5}"))
    bp, info = locate("rollout", **common)
    # v_0 = v_1 = 1 (fewer than 2 steps kept), v_2 = v_3 = 0: success drops when step 1 is kept.
    assert info["scores"] == [1.0, 1.0, 0.0, 0.0] and bp.step == 1 and bp.kept_steps == 1
    assert info["cost"] == {"generated": 4 * 2 * len("\\boxed{5}"), "forced": 0}
    bp, info = locate("judge", **common)
    assert bp.step == 2 and bp.kept_steps == 2 and bp.cut_token == spans[1][1]
    assert info["cost"]["generated"] == 0 and info["cost"]["forced"] > len(traj)
    bp, info = locate("first_error", **{**common, "steps": ["1 + 1 = 2\n\n", "2 + 2 = 5\n\n", "\\boxed{5}"],
                                        "spans": spans[:3]})
    assert bp.step == 1 and bp.kept_steps == 1 and info["fallback"] is None
    bp, info = locate("first_error", **common)  # no false equation: the entropy breakpoint, said so
    assert info["fallback"] == "entropy (no false step)" and bp.mode == "step"
    bp, info = locate("random", **{**common, "source_seed": 3})
    assert bp.mode == "random" and bp.candidates == [1, 2, 3]
    assert bp.step in bp.candidates and bp.kept_steps == bp.step - 1
    with pytest.raises(ValueError):
        locate("oracle", **common)


@pytest.mark.parametrize("locator", ["random", "first_error", "rollout", "judge"])
def test_every_locator_runs_inside_gear_and_records_its_cost(tmp_path, tiny_model_dir, locator):
    from test_gear_e2e import QUIET, _cfg

    from heal.gear import run_repair, summarize_repairs
    from heal.stage0 import run_sample
    from heal.store import read_jsonl

    cfg = _cfg(tmp_path, tiny_model_dir, "hf", [{"id": "a", "question": "2+3?", "answer": "5"}],
               {"gear": {"skip_truncated": False, "locator": locator, "max_trajectories": 1, "continuations": 1,
                         "rollout_samples": 1},
                "sampling": {"max_new_tokens": 12}})
    run_sample(cfg, **QUIET)
    # Stage 0's samples replaced by one failed four-step trajectory, so every locator has steps to choose.
    from transformers import AutoTokenizer

    from heal.store import atomic_write_jsonl

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "2 + 3 = 5\n\n5 + 1 = 7\n\nSo it is 7.\n\n\\boxed{7}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    samples = list(read_jsonl(tmp_path / "run" / "samples.jsonl"))
    atomic_write_jsonl(tmp_path / "run" / "samples.jsonl",
                       [{**samples[0], "token_ids": ids, "text": text, "entropy": [0.5] * len(ids), "correct": False,
                         "pred": "7", "truncated": False}])
    run_repair(cfg, **QUIET)
    [rec] = list(read_jsonl(tmp_path / "run" / "repairs.jsonl"))
    info = rec["locator_info"]
    assert rec["locator"] == locator and info["locator"] == locator
    cost, bp = info["cost"], rec["breakpoint"]
    assert bp["n_steps"] == 4 and bp["mode"] == locator
    if locator == "rollout":  # one rollout per step boundary; a random model never reaches 5
        assert cost["generated"] > 0 and cost["forced"] == 0 and info["scores"] == [0.0] * 4
        assert bp["restart"]  # nothing ever succeeds: the earliest boundary
    elif locator == "judge":
        assert cost["forced"] > len(ids) and cost["generated"] == 0 and len(info["scores"]) == 4
    else:
        assert cost == {"generated": 0, "forced": 0}
    if locator == "first_error":  # "5 + 1 = 7" is step 1: the prefix keeps step 0
        assert bp["step"] == 1 and bp["kept_steps"] == 1 and info["fallback"] is None
    s = summarize_repairs(tmp_path / "run")
    assert s["teacher_tokens_with_locator"] == s["teacher_tokens"] + cost["generated"] + cost["forced"]
