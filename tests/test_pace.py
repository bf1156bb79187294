"""PACE: the loss mask, the reasoning text, stage chaining and cumulative data on a tiny model."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from heal.config import load_config
from heal.pace import METHODS, cap_per_problem, stage_plan, tokenize_for_student
from helpers import write_tiny_run


@pytest.fixture(scope="module")
def smol_tok(smollm2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2.hf)


def test_loss_mask_covers_exactly_the_completion_and_its_end_of_turn(smol_tok):
    """SmolLM2's pad token is its EOS: a collator that masks padding by id would mask the EOS too."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    assert smol_tok.pad_token_id == smol_tok.eos_token_id  # the trap this test is about
    ex = [{"prompt": "What is 2 + 3?", "prompt_ids": None, "completion_ids": None,
           "completion": "2 + 3 = 5.\n\n\\boxed{5}"},
          {"prompt": "And 40 + 2?", "prompt_ids": None, "completion_ids": None, "completion": "42"}]
    rows = tokenize_for_student(ex, smol_tok, exact_ids=False)
    batch = DataCollatorForLanguageModeling(pad_token_id=smol_tok.pad_token_id)(rows)
    for i, row in enumerate(rows):
        labels = batch["labels"][i]
        n_prompt = sum(1 for x in row["labels"] if x == -100)
        prompt_len = len(smol_tok.apply_chat_template([{"role": "user", "content": ex[i]["prompt"]}],
                                                      add_generation_prompt=True, tokenize=True)["input_ids"])
        assert n_prompt == prompt_len
        assert (labels[:prompt_len] == -100).all()
        completion = labels[prompt_len : len(row["input_ids"])]
        assert (completion != -100).all()
        assert completion[-1].item() == smol_tok.convert_tokens_to_ids("<|im_end|>")  # the student learns to stop
        assert (labels[len(row["input_ids"]):] == -100).all()  # padding carries no loss
        assert smol_tok.decode(completion[:-1]) == ex[i]["completion"]


def test_teacher_ids_are_used_exactly_when_tokenizers_match(smol_tok):
    """The completion keeps the teacher's exact ids; the prompt is the student's own template (what it
    sees at evaluation); a truncated completion gets no end-of-turn token."""
    end = smol_tok.convert_tokens_to_ids("<|im_end|>")
    prompt = smol_tok.apply_chat_template([{"role": "user", "content": "q"}], add_generation_prompt=True,
                                          tokenize=True)["input_ids"]
    ex = [{"prompt": "q", "prompt_ids": [9, 9], "completion_ids": [7, 8, end], "completion": "ignored"},
          {"prompt": "q", "prompt_ids": [9, 9], "completion_ids": [7, 8], "completion": "ignored", "truncated": True}]
    full, cut = tokenize_for_student(ex, smol_tok, exact_ids=True)
    assert full["input_ids"] == prompt + [7, 8, end] and full["labels"] == [-100] * len(prompt) + [7, 8, end]
    assert cut["input_ids"] == prompt + [7, 8]
    # Engines leave the stop token out; an older hf record ends with the teacher's own (here
    # <|endoftext|>): the training text still ends with exactly one end-of-turn, the student's.
    eot = smol_tok.convert_tokens_to_ids("<|endoftext|>")
    for ids in ([7, 8], [7, 8, end], [7, 8, eot]):
        [row] = tokenize_for_student([{"prompt": "q", "completion_ids": ids, "completion": "x"}], smol_tok, exact_ids=True)
        assert row["input_ids"] == prompt + [7, 8, end]


def test_reasoning_text_is_not_stripped_by_the_chat_template(smol_tok):
    """Some templates (Qwen3, R1 distills) drop <think> content from assistant turns; the completion
    never goes through the template, so every reasoning token is trained on."""
    tok = smol_tok
    stripping = ("{% for m in messages %}<|im_start|>{{ m.role }}\n"
                 "{% if m.role == 'assistant' %}{{ m.content.split('</think>')[-1] }}{% else %}{{ m.content }}{% endif %}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    old = tok.chat_template
    tok.chat_template = stripping
    try:
        completion = "<think>361 - 220 = 141, then 141 - 607 = -466</think>\n\\boxed{-466}"
        templated = tok.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": completion}],
                                            tokenize=False)
        assert "141 - 607" not in templated  # the trap exists
        [row] = tokenize_for_student([{"prompt": "q", "prompt_ids": None, "completion_ids": None, "completion": completion}],
                                     tok, exact_ids=False)
        trained = tok.decode([t for t in row["labels"] if t != -100])
        assert "361 - 220 = 141, then 141 - 607 = -466" in trained
    finally:
        tok.chat_template = old


def test_stage_plans_are_cumulative_and_budget_matched(tmp_path):
    cfg = load_config(None, {"train.batch_size": 2, "train.stages": {k: {"epochs": 1, "learning_rate": 1e-4} for k in ("I", "II", "III")}})
    sizes = {"D1": 10, "D2": 4, "D3": 6, "D2raw": 8, "D3raw": 12, "ALL": 40}
    heal = stage_plan("heal", sizes, cfg)
    assert [p["data"] for p in heal] == [["D1"], ["D1", "D2"], ["D1", "D2", "D3"]]
    rs = stage_plan("sft_rs", sizes, cfg)
    assert rs[0]["max_steps"] == 5 + 7 + 10  # ceil(10/2) + ceil(14/2) + ceil(20/2)
    assert all(p["max_steps"] is None for p in heal)  # heal trains its epochs: it sets the budget
    no_pure = stage_plan("heal_no_pure", sizes, cfg)
    assert [p["data"] for p in no_pure] == [["D1"], ["D1", "D2raw"], ["D1", "D2raw", "D3raw"]]
    assert [p["max_steps"] for p in no_pure] == [5, 7, 10]  # heal's steps stage by stage, not ceil(18/2), ceil(30/2)
    assert set(METHODS) == {"heal", "sft_rs", "keep_all", "star", "heal_no_pure", "heal_no_curriculum",
                            "heal_continuous"}
    # One schedule across the curriculum: heal's data and steps, each stage entering it where the last left off.
    cont = stage_plan("heal_continuous", sizes, cfg)
    assert [p["data"] for p in cont] == [p["data"] for p in heal]
    assert [p["max_steps"] for p in cont] == [5, 7, 10]
    assert [p["schedule"] for p in cont] == [{"offset": 0, "total": 22, "save_optimizer": True},
                                             {"offset": 5, "total": 22, "save_optimizer": True},
                                             {"offset": 12, "total": 22, "save_optimizer": False}]
    assert all("schedule" not in p for p in heal + rs + no_pure)  # their fingerprints stay as they were


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_curriculum_schedule_entered_at_an_offset_continues_one_schedule(name):
    from transformers import get_scheduler

    from heal.pace import curriculum_schedule

    def lrs(make, steps):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2e-5)
        sched = make(opt)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    one_run = lrs(lambda o: get_scheduler(name, o, num_warmup_steps=3, num_training_steps=22), 22)
    staged = [lr for offset, steps in [(0, 5), (5, 7), (12, 10)]
              for lr in lrs(lambda o: curriculum_schedule(name, o, 3, 22, offset), steps)]
    assert staged == pytest.approx(one_run, abs=1e-15)
    assert one_run[0] == 0 and max(one_run) == pytest.approx(2e-5)  # one warm-up, at the start only
    with pytest.raises(ValueError, match="cannot run across stages"):
        curriculum_schedule("reduce_lr_on_plateau", torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1), 0, 5, 0)


def test_cap_per_problem_is_seeded_and_order_independent():
    rows = [{"key": f"p{i % 3}/{j}", "problem_id": f"p{i % 3}"} for i in range(3) for j in range(i + 1)]
    rows += [{"key": f"q/{j}", "problem_id": "q"} for j in range(5)]
    capped = cap_per_problem(rows, 2, seed=0)
    counts = {pid: sum(r["problem_id"] == pid for r in capped) for pid in ("p0", "p1", "p2", "q")}
    assert counts == {"p0": 1, "p1": 2, "p2": 2, "q": 2}
    assert [r for r in rows if r in capped] == capped  # original order kept
    assert {r["key"] for r in cap_per_problem(rows[::-1], 2, seed=0)} == {r["key"] for r in capped}
    picks = {tuple(sorted(r["key"] for r in cap_per_problem(rows, 2, seed=s) if r["problem_id"] == "q")) for s in range(8)}
    assert len(picks) > 1  # the seed moves the choice


def test_pace_stages_chain_weights_and_accumulate_data(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    from heal.pace import run_train

    cfg = load_config(write_tiny_run(tmp_path, tiny_model_dir))
    final = run_train(cfg, log=lambda *a: None)
    run = Path(cfg.output_dir)
    sizes = json.loads((run / "data" / "sizes.json").read_text())
    assert sizes["D1"] == 2 and sizes["ALL"] == 8 and sizes["D2raw"] == sizes["D3raw"] == 4
    assert sizes["D2"] == sizes["D3"] == 2  # PURE rejected rho_step 9.0 > 2.0
    stages = [json.loads((run / "checkpoints" / "heal" / f"stage-{s}" / "heal_stage.json").read_text())
              for s in ("I", "II", "III")]
    assert [s["examples"] for s in stages] == [2, 4, 6]  # cumulative: D1, D1+D2, D1+D2+D3
    assert stages[0]["init"] == tiny_model_dir
    assert stages[1]["init"] == str(run / "checkpoints" / "heal" / "stage-I")
    assert stages[2]["init"] == str(run / "checkpoints" / "heal" / "stage-II")
    # Stage II really started from stage I's weights: they differ from the base model's.
    base = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    s1 = load_file(str(run / "checkpoints" / "heal" / "stage-I" / "model.safetensors"))
    name = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(base[name], s1[name])
    sft = json.loads((run / "checkpoints" / "sft_rs" / "stage-single" / "heal_stage.json").read_text())
    assert sft["steps"] == sum(s["steps"] for s in stages)  # matched optimizer-step budget
    assert all(s["train_runtime_s"] > 0 for s in stages + [sft])  # what a budget is planned from
    assert final == {"heal": str(run / "checkpoints" / "heal" / "stage-III"),
                     "sft_rs": str(run / "checkpoints" / "sft_rs" / "stage-single")}
    # Resumable: a second call trains nothing.
    mtime = (run / "checkpoints" / "heal" / "stage-III" / "DONE").stat().st_mtime
    run_train(cfg, log=lambda *a: None)
    assert (run / "checkpoints" / "heal" / "stage-III" / "DONE").stat().st_mtime == mtime
    # ... also with a speed-only setting changed (activation recomputation gives the same updates).
    faster = cfg.model_copy(update={"train": cfg.train.model_copy(update={"gradient_checkpointing": False})})
    run_train(faster, log=lambda *a: None)
    assert (run / "checkpoints" / "heal" / "stage-III" / "DONE").stat().st_mtime == mtime


def test_pruned_stages_keep_their_record_and_are_retrained_only_when_needed(tmp_path, tiny_model_dir):
    """train.keep_stage_weights: false deletes heal's stage I and II weights once stage III is done;
    a rerun skips all three, and a stage III that must train again first retrains what it starts from."""
    from heal.pace import PRUNED, run_train

    cfg = load_config(write_tiny_run(tmp_path, tiny_model_dir, {"methods": ["heal"], "keep_stage_weights": False}))
    run_train(cfg, log=lambda *a: None)
    heal_dir = Path(cfg.output_dir) / "checkpoints" / "heal"
    for s in ("I", "II"):
        assert sorted(p.name for p in (heal_dir / f"stage-{s}").iterdir()) == ["DONE", PRUNED, "heal_stage.json"]
    assert (heal_dir / "stage-III" / "model.safetensors").exists()
    said = []
    run_train(cfg, log=said.append)
    assert [m for m in said if m.startswith("heal stage")] == [f"heal stage {s}: done, skipping" for s in ("I", "II", "III")]
    (heal_dir / "stage-III" / "DONE").unlink()  # stage III interrupted: it needs stage II's weights, II needs I's
    said = []
    run_train(cfg, log=said.append)
    assert [m for m in said if "were deleted" in m] == [
        f"heal stage-{s}: its weights were deleted (train.keep_stage_weights: false) and the next stage needs "
        "them: training it again" for s in ("II", "I")]
    assert sum(m.startswith("trained ") for m in said) == 3
    for s in ("I", "II"):  # pruned again once stage III is done
        assert (heal_dir / f"stage-{s}" / PRUNED).exists() and not (heal_dir / f"stage-{s}" / "model.safetensors").exists()
    assert (heal_dir / "stage-III" / "DONE").exists()


@pytest.mark.parametrize("method", ["heal", "heal_continuous"])
def test_lora_stages_keep_their_adapters_and_rebuild_missing_weights(tmp_path, tiny_model_dir, method):
    """Under LoRA a stage's adapter outlives its pruned weights: a run whose folders hold only records
    and adapters (pruned, or moved between machines without the gigabytes) rebuilds the merged weights
    it needs from them, the same weights training wrote, and trains nothing again."""
    from transformers import AutoModelForCausalLM

    from heal.evaluation import model_tag
    from heal.pace import ADAPTER_DIR, PRUNED, ensure_weights, run_train

    cfg = load_config(write_tiny_run(tmp_path, tiny_model_dir, {
        "methods": [method], "keep_stage_weights": False, "lora": {"r": 4, "alpha": 8}}))
    run_train(cfg, log=lambda *a: None)
    ckpt = Path(cfg.output_dir) / "checkpoints" / method
    for s in ("I", "II"):
        assert sorted(p.name for p in (ckpt / f"stage-{s}").iterdir()) == [
            "DONE", PRUNED, ADAPTER_DIR, "heal_stage.json"]
    trained = AutoModelForCausalLM.from_pretrained(ckpt / "stage-III", dtype=torch.float32).state_dict()
    tag, fingerprint = model_tag(ckpt / "stage-III"), json.loads((ckpt / "stage-III" / "heal_stage.json").read_text())["fingerprint"]
    for path in (ckpt / "stage-III").iterdir():  # only the record and the adapter are left
        if path.name not in ("DONE", ADAPTER_DIR, "heal_stage.json"):
            path.unlink()
    said = []
    run_train(cfg, log=said.append)
    assert not any(m.startswith("trained ") or "rebuilt" in m for m in said)  # eval rebuilds what it needs
    ensure_weights(ckpt / "stage-III", tiny_model_dir, log=said.append)
    assert f"{method} stage-III: merged weights rebuilt from its LoRA adapter" in said
    # heal's stage III sits on stage II's merged weights, which sit on stage I's: both rebuilt first
    assert sum("rebuilt" in m for m in said) == (3 if method == "heal" else 1)
    for s in ("I", "II"):  # rebuilt on the way only: deleted again, as keep_stage_weights says
        assert (ckpt / f"stage-{s}" / PRUNED).exists() and not (ckpt / f"stage-{s}" / "model.safetensors").exists()
    rebuilt = AutoModelForCausalLM.from_pretrained(ckpt / "stage-III", dtype=torch.float32).state_dict()
    assert all(torch.allclose(trained[k], rebuilt[k], atol=1e-6) for k in trained)
    assert model_tag(ckpt / "stage-III") == tag  # the same weights: their evaluation records still count
    (ckpt / "stage-III" / "DONE").unlink()  # stage III must train again
    said = []
    run_train(cfg, log=said.append)
    # trained again from the same inputs: the same fingerprint, but other weights, other records
    assert json.loads((ckpt / "stage-III" / "heal_stage.json").read_text())["fingerprint"] == fingerprint
    assert model_tag(ckpt / "stage-III") not in (tag, fingerprint) and model_tag(ckpt / "stage-III").startswith(fingerprint)
    trained_again = [m.split(" (")[0].removeprefix(f"trained {ckpt}/") for m in said if m.startswith("trained ")]
    # heal's starts from stage II's rebuilt weights; heal_continuous's also needs stage II's optimizer
    # state, which pruning deleted: its curriculum trains again from the start
    assert trained_again == (["stage-III"] if method == "heal" else ["stage-I", "stage-II", "stage-III"])


def test_continuous_curriculum_carries_optimizer_and_one_schedule(tmp_path, tiny_model_dir):
    """heal_continuous: heal's stages, but its learning rates are those of one run of the same length
    (heal_no_curriculum's, step for step) and Adam's state goes on from stage to stage."""
    from heal.pace import OPTIMIZER_FILE, run_train

    cfg = load_config(write_tiny_run(tmp_path, tiny_model_dir, {
        "methods": ["heal_continuous", "heal_no_curriculum"], "warmup_ratio": 0.2}))
    run_train(cfg, log=lambda *a: None)
    ckpt = Path(cfg.output_dir) / "checkpoints"
    stages = [json.loads((ckpt / "heal_continuous" / f"stage-{s}" / "heal_stage.json").read_text())
              for s in ("I", "II", "III")]
    one = json.loads((ckpt / "heal_no_curriculum" / "stage-single" / "heal_stage.json").read_text())
    assert [s["steps"] for s in stages] == [1, 2, 3] and one["steps"] == 6
    assert [s["examples"] for s in stages] == [2, 4, 6]  # still cumulative
    assert [lr for s in stages for lr in s["lr_curve"]] == pytest.approx(one["lr_curve"], abs=1e-15)
    assert [s.get("optimizer_carried") for s in stages] == [False, True, True]
    assert [(ckpt / "heal_continuous" / f"stage-{s}" / OPTIMIZER_FILE).exists() for s in ("I", "II", "III")] == [
        True, True, False]  # the last stage's state is needed by no one
    assert set(json.loads((ckpt / "final.json").read_text())) == {"heal_continuous", "heal_no_curriculum"}
    state = torch.load(ckpt / "heal_continuous" / "stage-II" / OPTIMIZER_FILE, weights_only=True)["state"]
    assert {int(v["step"]) for v in state.values()} == {1 + 2}  # Adam's step count went on from stage I


def test_continuous_curriculum_is_refused_under_fsdp_before_anything_trains(tmp_path, tiny_model_dir, monkeypatch):
    from heal.pace import run_train

    cfg = load_config(write_tiny_run(tmp_path, tiny_model_dir, {"methods": ["sft_rs", "heal_continuous"]}))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match=r"\['heal_continuous'\] carry the optimizer .* FSDP"):
        run_train(cfg, log=lambda *a: None)
    assert not (Path(cfg.output_dir) / "checkpoints").exists()  # sft_rs, listed first, did not train


def test_continuous_stage_resumes_mid_stage_on_its_schedule(tmp_path, tiny_model_dir, monkeypatch):
    from transformers import Trainer

    from heal.pace import train_stage

    cfg = load_config(write_tiny_run(tmp_path, tiny_model_dir, {"warmup_ratio": 0.2}))
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"save_steps": 2})})
    rows = [{"input_ids": [5, 6, 7, 8, 9], "labels": [-100, -100, 7, 8, 9]}] * 8
    first = {"name": "I", "epochs": 1, "learning_rate": 1e-3, "max_steps": 2, "fingerprint": "a",
             "schedule": {"offset": 0, "total": 6, "save_optimizer": True}}
    train_stage(tiny_model_dir, rows, tmp_path / "stage-I", cfg, first, seed=0, log=lambda *a: None)
    second = first | {"name": "II", "max_steps": 4, "fingerprint": "b",
                      "schedule": {"offset": 2, "total": 6, "save_optimizer": False}}
    whole = train_stage(str(tmp_path / "stage-I"), rows, tmp_path / "a" / "stage-II", cfg, second, seed=1,
                        log=lambda *a: None)
    save = Trainer._save_checkpoint

    def save_then_interrupt(self, *a, **k):
        save(self, *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_stage(str(tmp_path / "stage-I"), rows, tmp_path / "b" / "stage-II", cfg, second, seed=1, log=lambda *a: None)
    monkeypatch.setattr(Trainer, "_save_checkpoint", save)
    said = []
    resumed = train_stage(str(tmp_path / "stage-I"), rows, tmp_path / "b" / "stage-II", cfg, second, seed=1,
                          log=said.append)
    assert said[0] == "resuming stage-II from checkpoint-2"
    assert resumed["lr_curve"] == pytest.approx(whole["lr_curve"], abs=1e-15) and len(whole["lr_curve"]) == 4
    assert resumed["loss_curve"] == pytest.approx(whole["loss_curve"], rel=1e-4)


def test_interrupted_stage_resumes_from_its_last_checkpoint(tmp_path, tiny_model_dir, monkeypatch):
    from transformers import Trainer

    from heal.pace import train_stage

    cfg = load_config(write_tiny_run(tmp_path, tiny_model_dir))
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"save_steps": 2, "progress": False})})
    rows = [{"input_ids": [5, 6, 7, 8, 9], "labels": [-100, -100, 7, 8, 9]}] * 8
    stage = {"name": "I", "epochs": 1, "learning_rate": 1e-4, "max_steps": 4, "fingerprint": "f1"}
    out = tmp_path / "stage-I"
    save = Trainer._save_checkpoint

    def save_then_interrupt(self, *a, **k):  # Ctrl-C right after the step-2 checkpoint is written
        save(self, *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_stage(tiny_model_dir, rows, out, cfg, stage, seed=0, log=lambda *a: None)
    assert (tmp_path / "stage-I.partial" / "checkpoint-2").is_dir() and not out.exists()
    # A kill inside the next save leaves a newer checkpoint without trainer_state.json (Trainer writes
    # it last): resuming from that one would train all 4 steps again on top of its weights.
    cut = tmp_path / "stage-I.partial" / "checkpoint-3"
    shutil.copytree(tmp_path / "stage-I.partial" / "checkpoint-2", cut)
    (cut / "trainer_state.json").unlink()
    monkeypatch.setattr(Trainer, "_save_checkpoint", save)
    said = []
    meta = train_stage(tiny_model_dir, rows, out, cfg, stage, seed=0, log=said.append)
    assert said[0] == "resuming stage-I from checkpoint-2"
    assert meta["steps"] == 4 and meta["steps_run"] == 2 and (out / "DONE").exists()
    # The resumed stage reports the mean loss of all 4 steps, as an uninterrupted one does (the
    # Trainer's own training_loss divides the resumed steps' loss by all 4).
    whole = train_stage(tiny_model_dir, rows, tmp_path / "stage-whole", cfg, stage | {"fingerprint": "w"}, seed=0,
                        log=lambda *a: None)
    assert len(meta["loss_curve"]) == 4 and meta["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-3)
    assert not list(out.glob("checkpoint-*")) and not (out / "heal_fingerprint").exists()
    # A checkpoint of other inputs (another fingerprint) is never resumed.
    monkeypatch.setattr(Trainer, "_save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_stage(tiny_model_dir, rows, out, cfg, stage, seed=0, log=lambda *a: None)
    monkeypatch.setattr(Trainer, "_save_checkpoint", save)
    said = []
    train_stage(tiny_model_dir, rows, out, cfg, stage | {"fingerprint": "f2"}, seed=0, log=said.append)
    assert not any(s.startswith("resuming") for s in said)


def test_continuous_curriculum_under_lora_trains_one_adapter_across_stages(tmp_path, tiny_model_dir):
    """heal_continuous with LoRA: each stage goes on training the previous stage's adapter on the same
    base weights, with its optimizer state, and saves merged weights for eval; merging twice (an
    adapter on already-merged weights) would double the update."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from heal.pace import ADAPTER_DIR, OPTIMIZER_FILE, run_train

    cfg = load_config(write_tiny_run(tmp_path, tiny_model_dir, {
        "methods": ["heal_continuous"], "lora": {"r": 4, "alpha": 8}}))
    run_train(cfg, log=lambda *a: None)
    ckpt = Path(cfg.output_dir) / "checkpoints" / "heal_continuous"
    stages = [json.loads((ckpt / f"stage-{s}" / "heal_stage.json").read_text()) for s in ("I", "II", "III")]
    assert [s.get("optimizer_carried") for s in stages] == [False, True, True]
    assert {s["lora_base"] for s in stages} == {stages[0]["init"]}  # every adapter sits on the student itself
    assert all((ckpt / f"stage-{s}" / ADAPTER_DIR).exists() for s in ("I", "II", "III"))
    assert [(ckpt / f"stage-{s}" / OPTIMIZER_FILE).exists() for s in ("I", "II", "III")] == [True, True, False]
    state = torch.load(ckpt / "stage-II" / OPTIMIZER_FILE, weights_only=True)["state"]
    assert {int(v["step"]) for v in state.values()} == {1 + 2}  # Adam's step count went on from stage I
    # Stage II's merged weights are the student + stage II's adapter (not stage I's merge + more).
    base = AutoModelForCausalLM.from_pretrained(stages[0]["init"], dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(ckpt / "stage-II" / ADAPTER_DIR)).merge_and_unload().state_dict()
    saved = AutoModelForCausalLM.from_pretrained(ckpt / "stage-II", dtype=torch.float32).state_dict()
    assert all(torch.allclose(merged[k], saved[k], atol=1e-6) for k in saved)
    student = AutoModelForCausalLM.from_pretrained(stages[0]["init"], dtype=torch.float32).state_dict()
    assert any(not torch.allclose(student[k], saved[k]) for k in saved)  # and it did train


def test_a_student_found_at_another_path_keeps_the_finished_stages(tmp_path, tiny_model_dir, monkeypatch):
    """Stage I's fingerprint holds the student's name, not the folder it resolves to: a run resumed on a
    machine with another HEAL_HOME (the same alias, another path) does not train its stages again."""
    import heal.models
    from heal.models import ModelPaths
    from heal.pace import run_train

    cfg = load_config(write_tiny_run(tmp_path, tiny_model_dir, {"methods": ["sft_rs"]}))
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"student": "tiny-student", "progress": False})})
    real, where = heal.models.resolve, {"hf": tiny_model_dir}
    monkeypatch.setattr(heal.models, "resolve", lambda name: ModelPaths(name=name, hf=where["hf"], gguf=None)
                        if name == "tiny-student" else real(name))
    run_train(cfg, log=lambda *a: None)
    where["hf"] = str(shutil.copytree(tiny_model_dir, tmp_path / "elsewhere"))
    said = []
    run_train(cfg, log=said.append)
    assert "sft_rs stage single: done, skipping" in said and not any(s.startswith("trained") for s in said)
