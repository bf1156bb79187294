"""PACE: building D1-D3 and training the student in cumulative SFT stages (`heal train`).

Data (written to RUN/data/ as JSONL anyone can open):
- D1: every answer-correct Stage 0 trajectory;
- D2: answer-guided samples accepted by PURE;
- D3: GEAR repairs accepted by PURE.
Methods (method doc, "Baselines and ablations"), each a list of stages; a stage trains on the union
of its data sets, starting from the previous stage's weights:
- heal:               I: D1 -> II: D1+D2 -> III: D1+D2+D3
- sft_rs:             D1
- keep_all:           every Stage 0 trajectory, correct or not
- star:               D1+D2 in one stage
- heal_no_pure:       the HEAL curriculum with D2/D3 unfiltered (every answer-correct candidate)
- heal_no_curriculum: D1+D2+D3 shuffled, one stage
- heal_continuous:    the HEAL curriculum under one optimizer and one learning-rate schedule (one
                      warm-up, one cosine across the three stages; Adam's moments carried over)
Training is TRL's SFTTrainer on pre-tokenized examples whose labels are -100 on the prompt and the
completion's ids (end-of-turn token included) elsewhere, so the loss covers exactly the completion.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import uuid
from pathlib import Path

from heal.config import RunConfig, echo_config
from heal import reasoning
from heal.engines.base import chat_prompt_ids
from heal.pure import verdict
from heal.records import CANDIDATE, SCORED, read_records
from heal.runs import load_stage0
from heal.rundir import output_settings, writes_run
from heal.store import atomic_write_jsonl, atomic_write_text, read_jsonl


METHODS: dict[str, list[list[str]]] = {
    "heal": [["D1"], ["D1", "D2"], ["D1", "D2", "D3"]],
    "sft_rs": [["D1"]],
    "keep_all": [["ALL"]],
    "star": [["D1", "D2"]],
    "heal_no_pure": [["D1"], ["D1", "D2raw"], ["D1", "D2raw", "D3raw"]],
    "heal_no_curriculum": [["D1", "D2", "D3"]],
    "heal_continuous": [["D1"], ["D1", "D2"], ["D1", "D2", "D3"]],
}
# Methods whose stages share one optimizer and one schedule: stage k enters the whole curriculum's
# schedule at its first step and starts from stage k-1's optimizer state (OPTIMIZER_FILE).
CONTINUOUS = {"heal_continuous"}
OPTIMIZER_FILE = "optimizer.pt"
# Under LoRA every stage also keeps its adapter unmerged (ADAPTER_DIR, beside the merged weights that
# eval reads): a continuous method's next stage trains the same adapter on the same base weights
# (heal_stage.json's "lora_base"), so its optimizer state still matches its parameters; and a stage's
# merged weights can be rebuilt from its adapter where only the adapter was kept or moved.
ADAPTER_DIR = "adapter"


def _example(problem: dict, completion_ids: list[int], text: str, source: str, key: str,
             truncated: bool = False) -> dict:
    return {"key": key, "problem_id": problem["id"], "source": source, "prompt": problem["prompt"],
            "prompt_ids": problem["prompt_ids"], "completion_ids": completion_ids, "completion": text,
            "truncated": truncated}


def build_data(cfg: RunConfig, log=print) -> dict[str, int]:
    """Write RUN/data/{D1,D2,D3,D2raw,D3raw,ALL}.jsonl from the run's artifacts; returns sizes."""
    run_dir = Path(cfg.output_dir)
    problems, by_problem, _ = load_stage0(run_dir)
    sets: dict[str, list[dict]] = {k: [] for k in ("D1", "ALL", "D2", "D3", "D2raw", "D3raw")}
    for pid, samples in by_problem.items():
        for s in samples:
            ex = _example(problems[pid], s["token_ids"], s["text"], "stage0", s["key"], s["truncated"])
            sets["ALL"].append(ex)
            if s["correct"] is True:
                sets["D1"].append(ex)
    scored = ({r["key"]: r for r in read_records(run_dir / "scored.jsonl", SCORED)}
              if (run_dir / "scored.jsonl").exists() else {})
    for name, kind in (("guided.jsonl", "D2"), ("repairs.jsonl", "D3")):
        if not (run_dir / name).exists():
            continue
        for r in read_records(run_dir / name, CANDIDATE):
            if r["correct"] is not True or r.get("duplicate"):
                continue
            ex = _example(problems[r["problem_id"]], r["training_ids"], r["training_text"], kind, r["key"],
                          r.get("truncated", False))
            sets[kind + "raw"].append(ex)
            if r["key"] in scored and verdict(scored[r["key"]], cfg.pure)[0]:
                sets[kind].append(ex)
    data_dir = run_dir / "data"
    if cfg.train.max_per_problem:
        # Every set is capped (one rule); the sizes before the cap say what PURE and the cap removed.
        atomic_write_text(data_dir / "uncapped_sizes.json", json.dumps({k: len(v) for k, v in sets.items()}, indent=2) + "\n")
        sets = {name: cap_per_problem(rows, cfg.train.max_per_problem, cfg.train.seed) for name, rows in sets.items()}
    for name, rows in sets.items():
        atomic_write_jsonl(data_dir / f"{name}.jsonl", rows)
    sizes = {k: len(v) for k, v in sets.items()}
    atomic_write_text(data_dir / "sizes.json", json.dumps(sizes, indent=2) + "\n")
    log(f"data: {sizes}")
    return sizes


def cap_per_problem(rows: list[dict], m: int, seed: int) -> list[dict]:
    """At most m rows per problem: a seeded random choice (by key, so it does not depend on file
    order), order otherwise kept."""
    by_problem: dict[str, list[dict]] = {}
    for r in rows:
        by_problem.setdefault(r["problem_id"], []).append(r)
    keep = set()
    for pid, rs in by_problem.items():
        keys = sorted(r["key"] for r in rs)
        random.Random(f"{seed}/{pid}").shuffle(keys)
        keep |= set(keys[:m])
    return [r for r in rows if r["key"] in keep]


def same_tokenizer(a, b) -> bool:
    probe = "Step 1: 361 - 220 = 141.\n\n\\boxed{-1345} ✓"
    return a.get_vocab() == b.get_vocab() and a(probe)["input_ids"] == b(probe)["input_ids"]


def tokenize_for_student(examples: list[dict], tok, exact_ids: bool, system: str | None = None,
                         max_length: int | None = None, teacher_format: reasoning.Format = reasoning.NONE,
                         student_format: reasoning.Format = reasoning.NONE) -> list[dict]:
    """input_ids = chat prompt + completion (+ end-of-turn); labels = -100 on the prompt.

    The prompt is always the student's own chat template (what it sees at evaluation), rendered with
    its reasoning format's template arguments: a template that pre-fills `<think>` keeps it in the
    prompt, and the completion then must not repeat it. The completion is the teacher's exact ids when
    the tokenizers and the reasoning formats match (nothing re-tokenised), else the teacher's text
    converted to the student's format (`reasoning.for_student`) and tokenised by the student. The
    loss covers reasoning, answer and the end-of-turn token, which is appended unless the completion
    was truncated (a cut-off text must not teach the student to stop there). The completion never
    goes through the chat template, which some templates (Qwen3) use to drop reasoning from
    assistant turns: heal's own mask keeps it."""
    end = end_of_turn(tok)
    specials = set(tok.all_special_ids)
    same_format = (teacher_format.enabled, teacher_format.prefilled, teacher_format.start, teacher_format.end) == \
        (student_format.enabled, student_format.prefilled, student_format.start, student_format.end)
    out = []
    for ex in examples:
        prompt = chat_prompt_ids(tok, ex["prompt"], system, student_format.template_kwargs)
        if exact_ids and same_format:
            completion = list(ex["completion_ids"])
            # Engines leave the stop token out; records of older hf runs end with the teacher's own
            # (perhaps <|endoftext|>, not the student's end of turn): one end-of-turn, the student's.
            while completion and completion[-1] in specials:
                completion.pop()
        else:
            text = reasoning.for_student(ex["completion"], teacher_format, student_format)
            completion = tok(text, add_special_tokens=False)["input_ids"]
        if not ex.get("truncated") and (not completion or completion[-1] != end):
            completion = completion + [end]
        ids = prompt + completion
        labels = [-100] * len(prompt) + completion
        if max_length and len(ids) > max_length:
            ids, labels = ids[:max_length], labels[:max_length]
        out.append({"input_ids": ids, "labels": labels})
    return out


def end_of_turn(tok) -> int:
    """The token that ends an assistant turn in the student's chat template."""
    for t in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        tid = tok.convert_tokens_to_ids(t)
        if isinstance(tid, int) and tid >= 0 and tid != tok.unk_token_id:
            return tid
    return tok.eos_token_id




def train_stage(init_model: str, train_rows: list[dict], out_dir: Path, cfg: RunConfig, stage: dict, seed: int,
                log=print, base_model: str | None = None) -> dict:
    """One SFT stage with TRL. Writes the model atomically to out_dir (a DONE marker last). base_model:
    the run's untrained student, which a continuous LoRA stage's adapter sits on (default: the path
    the previous stage recorded, which does not survive a move to a machine with another HEAL_HOME)."""
    import torch
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tc = cfg.train
    tok = AutoTokenizer.from_pretrained(init_model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # fp32 master weights always; bf16/fp16 only as autocast (half-precision weights would round
    # away updates at lr 1e-5).
    schedule = stage.get("schedule") or {}
    peft_config, lora_base = None, init_model
    if tc.lora and schedule.get("offset"):  # a continuous stage after the first: the previous adapter goes on
        from peft import PeftModel

        adapter = Path(init_model) / ADAPTER_DIR
        if not adapter.exists():
            raise FileNotFoundError(f"{adapter}: the previous stage's LoRA adapter, which a continuous stage goes "
                                    f"on training, is missing (delete {adapter.parent} to retrain it)")
        lora_base = base_model or json.loads((Path(init_model) / "heal_stage.json").read_text())["lora_base"]
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lora_base, dtype=torch.float32),
                                          str(adapter), is_trainable=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(init_model, dtype=torch.float32)
        if tc.lora:
            from peft import LoraConfig

            peft_config = LoraConfig(r=tc.lora.r, lora_alpha=tc.lora.alpha, lora_dropout=tc.lora.dropout,
                                     target_modules=tc.lora.target_modules, task_type="CAUSAL_LM")
    state = PartialState()  # one process, or one of several under `accelerate launch`
    tmp = out_dir.with_name(out_dir.name + ".partial")
    marker = tmp / "heal_fingerprint"  # which stage the mid-stage checkpoints in tmp belong to
    if state.is_main_process and tmp.exists():
        same = marker.exists() and marker.read_text() == str(stage.get("fingerprint"))
        if not (same and tc.save_steps and last_complete_checkpoint(tmp)):
            shutil.rmtree(tmp)  # an interrupted stage without a usable checkpoint starts again
    if state.is_main_process:
        tmp.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(stage.get("fingerprint")))
    state.wait_for_everyone()
    resume = last_complete_checkpoint(tmp) if tc.save_steps else None
    resumed_at = json.loads((Path(resume) / "trainer_state.json").read_text())["global_step"] if resume else 0
    if resume:
        log(f"resuming {out_dir.name} from {Path(resume).name}")
    args = SFTConfig(
        output_dir=str(tmp), num_train_epochs=stage["epochs"], learning_rate=stage["learning_rate"],
        max_steps=stage.get("max_steps") or -1, per_device_train_batch_size=tc.batch_size,
        gradient_accumulation_steps=tc.grad_accum, lr_scheduler_type=tc.lr_scheduler, warmup_steps=tc.warmup_ratio,  # a float < 1 is a ratio
        logging_steps=1, save_strategy="steps" if tc.save_steps else "no", save_steps=tc.save_steps or 500,
        save_total_limit=1, report_to="none", seed=seed, data_seed=seed,
        max_length=tc.max_length, packing=tc.packing, use_cpu=tc.device == "cpu", bf16=tc.dtype == "bfloat16", fp16=tc.dtype == "float16",
        completion_only_loss=None, dataset_num_proc=None, disable_tqdm=not tc.progress,
        activation_checkpointing=tc.gradient_checkpointing,  # transformers 5's name (gradient_* is deprecated)
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                         processing_class=tok, peft_config=peft_config)
    carried = None
    if schedule:
        carried = continue_curriculum(trainer, init_model, schedule)
    result = trainer.train(resume_from_checkpoint=resume)
    if tc.lora and state.is_main_process and not sharded():  # one process cannot gather sharded weights
        # before merging, which folds the adapter into the base weights in place. A continuous stage's
        # next stage trains it on; any stage's adapter (megabytes) rebuilds its merged weights
        # (gigabytes) on another machine: lora_base + the adapter.
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(tmp / ADAPTER_DIR)
    if tc.lora and tc.lora.merge:
        if state.is_main_process:
            trainer.accelerator.unwrap_model(trainer.model).merge_and_unload().save_pretrained(tmp)
    else:
        trainer.save_model(str(tmp))  # gathers FSDP / ZeRO-3 shards; writes on the main process only
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    # Trainer's training_loss sums only the losses of this process's steps but divides by every step
    # (a resumed stage reported a loss too small by the resumed share); the logged curve holds them all.
    train_loss = sum(losses) / len(losses) if resume and losses else result.training_loss
    meta = {"init": init_model, "examples": len(train_rows), "steps": trainer.state.global_step,
            "steps_run": trainer.state.global_step - resumed_at,  # by this call: train_runtime_s's steps
            "train_loss": train_loss, "loss_curve": losses, "lr_curve": lrs, "stage": stage,
            "seed": seed, "fingerprint": stage.get("fingerprint"), "processes": state.num_processes,
            # which training made these weights: the fingerprint names the inputs, and a stage trained
            # again from the same inputs (elsewhere, or after losing it) is not bit-identical, so its
            # evaluation records must not be pooled with the first one's (heal.evaluation.model_tag)
            "trained_id": uuid.uuid4().hex,
            # wall seconds of this process's training (a resumed stage: its last part only, the
            # steps_run steps): what a budget is planned from
            "train_runtime_s": result.metrics.get("train_runtime")}
    if tc.lora:
        meta["lora_base"] = lora_base  # the weights this stage's adapter sits on
    if carried is not None:
        meta["optimizer_carried"] = carried
    if state.is_main_process:
        if schedule.get("save_optimizer"):  # the next stage goes on from it
            torch.save(trainer.optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        for ckpt in tmp.glob("checkpoint-*"):  # mid-stage checkpoints: not part of the stage's result
            shutil.rmtree(ckpt)
        marker.unlink(missing_ok=True)
        tok.save_pretrained(tmp)
        (tmp / "heal_stage.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
        (out_dir / "DONE").write_text("ok\n")
        log(f"trained {out_dir} ({len(train_rows)} examples, {meta['steps']} steps, loss {train_loss:.4f})")
    state.wait_for_everyone()
    return meta


def sharded() -> bool:
    """Whether `accelerate launch` shards the model (FSDP / ZeRO): what it sets from such a config."""
    return any(os.environ.get(f"ACCELERATE_USE_{k}", "").lower() == "true" for k in ("FSDP", "DEEPSPEED"))


PRUNED = "PRUNED"  # a finished stage whose weights were deleted (train.keep_stage_weights: false)


def has_weights(out: Path) -> bool:
    """Whether a stage folder holds model weights (not only its record, or its record and adapter)."""
    return any(out.glob("*.safetensors"))


def rebuildable(method: str, stages: list[Path], i: int) -> bool:
    """Whether stage i's missing merged weights can be made from LoRA adapters: its own, on the untrained
    student (stage I, and every stage of a continuous method, whose one adapter sits on the student) or
    on stage i-1's weights, which must be there or rebuildable in turn."""
    if not (stages[i] / ADAPTER_DIR).exists():
        return False
    return i == 0 or method in CONTINUOUS or has_weights(stages[i - 1]) or rebuildable(method, stages, i - 1)


def rebuild_weights(method: str, stages: list[Path], i: int, student: str, log=print) -> None:
    """Stage i's merged weights from its adapter (rebuildable() must hold): the same merge train_stage
    made when the stage finished, on the same base weights, so eval and the next stage read what
    training wrote (up to float rounding). What a pruned stage, or one moved between machines as
    records and adapters only, needs before the stage after it trains or eval reads it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = student if i == 0 or method in CONTINUOUS else str(stages[i - 1])
    if base != student and not has_weights(stages[i - 1]):
        rebuild_weights(method, stages, i - 1, student, log)
    out = stages[i]
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(out / ADAPTER_DIR)).merge_and_unload()
    tmp = out.with_name(out.name + ".rebuild")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
    # the weights go in beside the record, which stays as it is; *.safetensors last, as has_weights
    # takes them for a complete folder
    for path in sorted(tmp.iterdir(), key=lambda p: p.suffix == ".safetensors"):
        os.replace(path, out / path.name)
    tmp.rmdir()
    (out / PRUNED).unlink(missing_ok=True)
    log(f"{method} {out.name}: merged weights rebuilt from its LoRA adapter")


def ensure_weights(out: Path, student: str, log=print) -> None:
    """Give a finished stage folder (a method's result, as final.json names it) its merged weights if
    they are missing and its LoRA adapters can make them (rebuild_weights): what eval calls before it
    loads a student, so a run moved between machines as records and adapters rebuilds only the
    weights that are still to be evaluated. student: the untrained student (an alias or its folder;
    resolved only for a rebuild)."""
    if has_weights(out) or not (out / "heal_stage.json").exists():
        return
    from heal.models import resolve

    method = out.parent.name
    names = ["I", "II", "III"] if len(METHODS.get(method, [])) == 3 else ["single"]
    folders = [out.parent / f"stage-{n}" for n in names]
    if out not in folders or not rebuildable(method, folders, folders.index(out)):
        raise FileNotFoundError(f"{out}: its weights are missing and no LoRA adapter can rebuild them; train it "
                                f"again (`heal train --method {method}`)")
    pruned = [f for f in folders if f != out and (f / PRUNED).exists()]
    rebuild_weights(method, folders, folders.index(out), resolve(student).hf, log)
    for folder in pruned:  # rebuilt only on the way to `out`: deleted again, as train.keep_stage_weights said
        if has_weights(folder):
            prune_stage(folder)


def first_stage_to_train(method: str, stages: list[tuple[Path, str]], log=print) -> int:
    """The index of a method's first stage that must train, from its stages' (folder, fingerprint):
    the first one not finished with this fingerprint, moved back over finished stages whose weights
    are missing and cannot be rebuilt from LoRA adapters (the stage it starts from must have
    weights). len(stages) when all are done."""
    def finished(out: Path, fingerprint: str) -> bool:
        return (out / "DONE").exists() and json.loads((out / "heal_stage.json").read_text()).get("fingerprint") == fingerprint

    folders = [out for out, _ in stages]

    def can_start_from(i: int) -> bool:  # a continuous stage also goes on from the one before's optimizer state
        return ((has_weights(folders[i]) or rebuildable(method, folders, i))
                and (method not in CONTINUOUS or (folders[i] / OPTIMIZER_FILE).exists()))

    start = next((i for i, (out, fp) in enumerate(stages) if not finished(out, fp)), len(stages))
    if start < len(stages) and (stages[start][0] / "DONE").exists():
        log(f"{method} stage {stages[start][0].name.removeprefix('stage-')}: its data or settings changed, "
            "training it again")
    if start == len(stages) and stages and not has_weights(folders[-1]) and not rebuildable(method, folders, start - 1):
        start -= 1
        log(f"{method} {stages[start][0].name}: its weights are missing: training it again")
    while 0 < start < len(stages) and not can_start_from(start - 1):
        start -= 1
        log(f"{method} {stages[start][0].name}: its weights were deleted (train.keep_stage_weights: false) and "
            "the next stage needs them: training it again")
    return start


def checkpoint_step(path: Path) -> int:
    """The step of Trainer's checkpoint folder checkpoint-<step>; -1 for any other name."""
    tail = path.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def checkpoints_newest_first(folder: Path) -> list[Path]:
    """Trainer's mid-stage checkpoint folders in `folder`, the latest step first."""
    found = (c for c in folder.glob("checkpoint-*") if c.is_dir() and checkpoint_step(c) >= 0)
    return sorted(found, key=checkpoint_step, reverse=True)


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest mid-stage checkpoint Trainer finished writing (trainer_state.json is its last file);
    newer ones a kill cut short are deleted. Resuming from a cut one would load its weights and then,
    finding no state, train the whole stage again on top of them (or fail on a cut optimizer.pt)."""
    from accelerate import PartialState

    for ckpt in checkpoints_newest_first(folder):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
            return str(ckpt)
        except (OSError, ValueError):
            if PartialState().is_main_process:
                shutil.rmtree(ckpt)
    return None


def prune_stage(out: Path) -> None:
    """Delete a finished stage's weights (and optimizer state), keeping its record: heal_stage.json
    (loss and learning-rate curves, for the report) and DONE, and its LoRA adapter (megabytes: with
    the stages before it, it rebuilds the later stages' merged weights)."""
    for path in out.iterdir():
        if path.name in ("heal_stage.json", "DONE", PRUNED, ADAPTER_DIR):
            continue
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    (out / PRUNED).write_text("weights deleted once the method's last stage was done (train.keep_stage_weights: "
                              "false)\n")


def curriculum_schedule(name: str, optimizer, warmup: int, total: int, offset: int):
    """transformers' schedule `name` (cosine, linear, ...) laid over the whole curriculum of `total`
    steps with `warmup` steps of warm-up, entered at step `offset`: the stages of a continuous method
    together follow the learning rates of one run of `total` steps."""
    import torch
    from torch.optim.lr_scheduler import LambdaLR
    from transformers import get_scheduler

    # The shape comes from transformers itself (its lambda, built on a throwaway optimizer), so a
    # continuous curriculum and a one-stage method of the same length share one schedule exactly.
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    full = get_scheduler(name, probe, num_warmup_steps=warmup, num_training_steps=total)
    if not isinstance(full, LambdaLR):
        raise ValueError(f"train.lr_scheduler {name!r} cannot run across stages; use cosine, linear or constant")
    shape = full.lr_lambdas[0]
    return LambdaLR(optimizer, lambda step: shape(step + offset))


def continue_curriculum(trainer, init_model: str, schedule: dict) -> bool:
    """Give a continuous method's stage its optimizer and schedule before training: the previous
    stage's optimizer state (Adam's moments and step count, from init_model/OPTIMIZER_FILE) and the
    curriculum's schedule from step schedule["offset"] on. Returns whether optimizer state was
    carried (not for the first stage). Under LoRA the parameters are the previous stage's adapter
    (train_stage loads it), so its state fits them as full fine-tuning's fits the whole model."""
    import torch

    optimizer = trainer.create_optimizer()  # transformers' own parameter groups (decay / no decay)
    carried = False
    if schedule["offset"] > 0:
        saved = Path(init_model) / OPTIMIZER_FILE
        if not saved.exists():
            raise FileNotFoundError(f"{saved}: the previous stage's optimizer state, which a continuous "
                                    f"stage goes on from, is missing (delete {saved.parent} to retrain it)")
        else:
            # On the CPU first (saved by process 0, possibly from cuda:0); load_state_dict moves each
            # tensor to its parameter's device.
            optimizer.load_state_dict(torch.load(saved, map_location="cpu", weights_only=True))
            carried = True
    for group in optimizer.param_groups:  # this stage's learning rate scales the shared shape
        group["lr"] = group["initial_lr"] = trainer.args.learning_rate
    warmup = trainer.args.get_warmup_steps(schedule["total"])
    trainer.lr_scheduler = curriculum_schedule(trainer.args.lr_scheduler_type, optimizer, warmup,
                                               schedule["total"], schedule["offset"])
    return carried


def stage_plan(method: str, sizes: dict[str, int], cfg: RunConfig) -> list[dict]:
    """The stages of a method with their epochs / learning rate / max_steps (budget matching)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {sorted(METHODS)}")
    tc = cfg.train
    names = ["I", "II", "III"]
    plan = []
    for i, sets in enumerate(METHODS[method]):
        sc = tc.stages[names[i]] if len(METHODS[method]) == 3 else tc.single
        plan.append({"name": names[i] if len(METHODS[method]) == 3 else "single", "data": sets,
                     "epochs": sc.epochs, "learning_rate": sc.learning_rate, "max_steps": None})
    # HEAL's optimizer steps per stage as the Trainer counts them: ceil(epochs * ceil(n / (batch *
    # accum * processes))).
    per_step = tc.batch_size * tc.grad_accum * int(os.environ.get("WORLD_SIZE", "1"))
    heal_steps = []
    for i, sets in enumerate(METHODS["heal"]):
        n = sum(sizes.get(s, 0) for s in sets)
        heal_steps.append(math.ceil(tc.stages[names[i]].epochs * max(1, math.ceil(n / per_step))))
    if method in CONTINUOUS:
        # One schedule over the whole curriculum needs its length up front: HEAL's steps (the same
        # data and epochs), so it is matched with heal step for step, with or without match_budget.
        for i, stage in enumerate(plan):
            stage["max_steps"] = heal_steps[i]
            stage["schedule"] = {"offset": sum(heal_steps[:i]), "total": sum(heal_steps),
                                 "save_optimizer": i < len(plan) - 1}
    elif tc.match_budget and method != "heal":
        # Matched budget: every method takes as many optimizer steps as the HEAL curriculum, so no
        # method wins by training longer: a one-stage method all of HEAL's steps, a three-stage one
        # (heal_no_pure, whose unfiltered sets are larger) HEAL's steps stage by stage.
        if len(plan) == 1:
            plan[0]["max_steps"] = sum(heal_steps)
        else:
            for stage, steps in zip(plan, heal_steps):
                stage["max_steps"] = steps
    return plan


def train_settings(train) -> dict:
    """The train settings a stage's fingerprint holds: its output settings (rundir.output_settings;
    the output-neutral ones, e.g. methods, progress, save_steps, only change what is trained or how
    fast). max_per_problem came later: unset, it is left out so that older runs keep their
    fingerprints."""
    keys = output_settings(train)
    if train.max_per_problem is None:
        del keys["max_per_problem"]
    return keys


def stage_fingerprint(tokenized: list[dict], stage: dict, init: str, prev: str | None, train) -> str:
    """What a stage is trained from (its examples, plan, starting weights, the stage before it, the
    train settings): a finished stage whose fingerprint changed is trained again, never reused."""
    return hashlib.sha256(json.dumps([tokenized, stage, init, prev, train_settings(train)], sort_keys=True)
                          .encode()).hexdigest()[:16]


@writes_run("train")
def run_train(cfg: RunConfig, methods: list[str] | None = None, log=print) -> dict:
    """Train every configured method (resumable: finished stages are skipped)."""
    from transformers import AutoTokenizer

    from heal.models import resolve

    from accelerate import PartialState

    run_dir = Path(cfg.output_dir)
    state = PartialState()  # under `accelerate launch`: the main process writes, every process trains
    if state.is_main_process:
        echo_config(cfg, run_dir)
        build_data(cfg, log)
    else:
        log = lambda *a, **k: None  # noqa: E731  (one process reports)
    state.wait_for_everyone()
    sizes = json.loads((run_dir / "data" / "sizes.json").read_text())
    student = resolve(cfg.train.student).hf
    teacher_tok = AutoTokenizer.from_pretrained(resolve(cfg.teacher.model).hf)
    student_tok = AutoTokenizer.from_pretrained(student)
    exact = same_tokenizer(teacher_tok, student_tok)
    teacher_format = reasoning.resolve(cfg.teacher.reasoning, teacher_tok)
    student_format = reasoning.resolve(cfg.train.reasoning or cfg.teacher.reasoning, student_tok)
    data = {name: list(read_jsonl(run_dir / "data" / f"{name}.jsonl")) for name in sizes}
    methods = methods or cfg.train.methods
    if CONTINUOUS & set(methods) and sharded():  # what `accelerate launch` sets from an FSDP / ZeRO config
        raise ValueError(f"{sorted(CONTINUOUS & set(methods))} carry the optimizer between stages on one process "
                         "or DDP; under FSDP / DeepSpeed train `heal` instead")
    final = run_dir / "checkpoints" / "final.json"
    results = {}
    for method in methods:
        # Every stage's inputs first: its examples and fingerprint (what it is trained from: a finished
        # stage whose inputs changed, new data, a new PURE threshold, other hyper-parameters, is
        # trained again, never silently reused).
        stages, init, prev = [], student, None  # prev: the fingerprint of the stage this one starts from
        for i, stage in enumerate(stage_plan(method, sizes, cfg)):
            out = run_dir / "checkpoints" / method / f"stage-{stage['name']}"
            rows = [ex for name in stage["data"] for ex in data[name]]
            if not rows:
                raise ValueError(f"{method} stage {stage['name']}: no training data in {stage['data']}")
            random.Random(cfg.train.seed + i).shuffle(rows)
            tokenized = tokenize_for_student(rows, student_tok, exact, cfg.prompt.system, cfg.train.max_length,
                                             teacher_format, student_format)
            # stage I's start by its name, not the path it resolves to here (HEAL_HOME differs between machines)
            fingerprint = stage_fingerprint(tokenized, stage, init if i else cfg.train.student, prev, cfg.train)
            stages.append((stage, out, tokenized, init, fingerprint))
            init, prev = str(out), fingerprint
        start = first_stage_to_train(method, [(out, fp) for _, out, _, _, fp in stages], log)
        folders = [out for _, out, _, _, _ in stages]
        for i, (stage, out, tokenized, init, fingerprint) in enumerate(stages):
            if i < start:
                log(f"{method} stage {stage['name']}: done, skipping")
                # the stage the next one starts from needs its weights (a method's result gets them
                # when eval needs them: ensure_weights)
                if i == start - 1 < len(stages) - 1 and not has_weights(out) and state.is_main_process:
                    rebuild_weights(method, folders, i, student, log)
                state.wait_for_everyone()
                continue
            if (out / "DONE").exists():
                state.wait_for_everyone()  # every process has read DONE before it goes
                if state.is_main_process:
                    (out / "DONE").unlink()
            train_stage(init, tokenized, out, cfg, stage | {"fingerprint": fingerprint}, cfg.train.seed + i, log,
                        base_model=student)
        last = str(stages[-1][1])  # the method's weights: its last stage's
        if not cfg.train.keep_stage_weights and state.is_main_process:
            for _, out, _, _, _ in stages[:-1]:
                prune_stage(out)
        results[method] = last
        if state.is_main_process:  # each method as it finishes (the report lists finished methods)
            # Relative to the run directory, so `heal eval` finds the weights from any working directory
            # and a run directory can be moved (evaluate.trained_models resolves them).
            merged = {**(json.loads(final.read_text()) if final.exists() else {}),
                      method: os.path.relpath(last, run_dir)}
            atomic_write_text(final, json.dumps(merged, indent=2) + "\n")
    state.wait_for_everyone()
    return results
