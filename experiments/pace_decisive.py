"""The decisive PACE run (issue 17), step by step; every step resumes. Plan, written before any run:
docs/results/pace-decisive/PLAN.md. Only heal's public API.

    python experiments/pace_decisive.py data          # training problems (360) and the OOD pilot (3 x 40)
    python experiments/pace_decisive.py stage0        # Stage 0 on the 360 (hours on one core; resumes)
    python experiments/pace_decisive.py teacher-data  # hint, repair (GEAR), filter (PURE) on Stage 0
    python experiments/pace_decisive.py pilot         # the OOD pilot: K = 4 on each family's 40, the rule
    python experiments/pace_decisive.py testset       # the 300 test problems (needs the pilot's family)
    python experiments/pace_decisive.py teacher-eval  # the teacher on the test set: 4 scored + 4 tier samples
    python experiments/pace_decisive.py student-pilot # 20 optimizer steps, full fine-tuning and LoRA: the rule
    python experiments/pace_decisive.py train         # every student run of the plan, primary ones first
    python experiments/pace_decisive.py eval          # every trained student on the test set
    python experiments/pace_decisive.py analyze       # the primary and secondary contrasts -> docs/results/
    python experiments/pace_decisive.py carry         # the students' training state (megabytes) into a
                                                      # committed folder, for a run that moves machines
    python experiments/pace_decisive.py status        # where the run stands
    python experiments/pace_decisive.py all           # every step in the plan's order, each resuming:
                                                      # the one command to leave running (nohup ... &)
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sys
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np

import heal
from heal.evaluation import holm
from heal.pace import checkpoint_step, checkpoints_newest_first
from heal.store import atomic_write_jsonl, atomic_write_text, read_jsonl, read_store

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "experiments" / "pace_decisive.yaml"
DATA = ROOT / "experiments" / "data"
TRAIN_FILE = DATA / "pace_decisive_train.jsonl"
PILOT_FILE = DATA / "pace_decisive_ood_pilot.jsonl"

SEED = 2026
# (task, parameters, id suffix): the plan's three bands of 120
TRAIN_BANDS = [
    ("chain_sum", {"min_terms": 4, "max_terms": 5, "min_digits": 3, "max_digits": 4}, ""),
    # Parentheses stay allowed (reasoning-gym 0.1.25 computes left to right without them; the
    # loader skips answers that contradict precedence).
    ("basic_arithmetic", {"min_terms": 3, "max_terms": 4, "min_digits": 2, "max_digits": 3,
                          "operators": ["+", "-", "*"]}, ""),
    ("chain_sum", {"min_terms": 6, "max_terms": 8, "min_digits": 4, "max_digits": 5}, "-hard"),
]
PILOT_SEED = 900100
PILOT_TASKS = ["gsm_symbolic", "simple_equations", "decimal_arithmetic"]


def config():
    return heal.load_config(CONFIG)


def band(task: str, params: dict, suffix: str, size: int, seed: int) -> list[dict]:
    skipped: list[str] = []
    rows = [p.to_dict() for p in heal.load_problems(f"reasoning_gym:{task}", size=size, seed=seed, params=params,
                                                     skipped=skipped)]
    if skipped:
        print(f"{task}{suffix}: {len(skipped)} problems skipped by the loader (first: {skipped[0]})")
    for r in rows:  # the hard band shares chain_sum's generator and seed: its ids get a suffix
        r["id"] += suffix
    return rows


def step_data():
    DATA.mkdir(parents=True, exist_ok=True)
    if not TRAIN_FILE.exists():
        rows = [r for task, params, suffix in TRAIN_BANDS for r in band(task, params, suffix, 120, SEED)]
        assert len({r["id"] for r in rows}) == len(rows)
        atomic_write_jsonl(TRAIN_FILE, rows)
    if not PILOT_FILE.exists():
        atomic_write_jsonl(PILOT_FILE, [r for task in PILOT_TASKS for r in band(task, {}, "", 40, PILOT_SEED)])
    for path in (TRAIN_FILE, PILOT_FILE):
        n = sum(1 for _ in open(path))
        print(f"{path.relative_to(ROOT)}: {n} problems")


def step_stage0():
    step_data()
    print(json.dumps(heal.sample(config()), indent=2))


def step_teacher_data():
    """hint -> repair -> filter on the finished Stage 0 (each resumes; the plan's settings are the yaml's)."""
    cfg = config()
    quiet = dict(progress=True, log=print)
    print(json.dumps({"hint": heal.hint(cfg, **quiet), "repair": heal.repair(cfg, **quiet),
                      "filter": heal.filter(cfg, **quiet)}, indent=2))


PILOT_DIR = "experiments/runs/pace-decisive-pilot"


def pilot_rates(tiers: list[dict]) -> dict[str, float]:
    """Pass rate of each pilot family over its problems' samples (ids are "<task>-s<seed>-<i>")."""
    n, c = {}, {}
    for t in tiers:
        task = t["problem_id"].rsplit("-s", 1)[0]
        n[task] = n.get(task, 0) + t["n"]
        c[task] = c.get(task, 0) + t["correct"]
    return {task: c[task] / n[task] for task in n if n[task]}


def ood_family(rates: dict[str, float]) -> str | None:
    """The plan's rule: the first family, in PILOT_TASKS order, whose pass rate lies in [0.2, 0.8]."""
    return next((task for task in PILOT_TASKS if 0.2 <= rates.get(task, -1) <= 0.8), None)


def step_pilot():
    """Stage 0 with K = 4 on the pilot's 3 x 40 problems (its own run directory), and the family the rule picks."""
    step_data()
    cfg = heal.load_config(CONFIG, {"output_dir": PILOT_DIR, "data.source": str(PILOT_FILE.relative_to(ROOT)),
                                     "sample.k": 4})
    heal.sample(cfg)
    tiers = [json.loads(line) for line in open(ROOT / PILOT_DIR / "tiers.jsonl")]
    rates = pilot_rates(tiers)
    out = {"rates": rates, "ood_family": ood_family(rates), "rule": "first of PILOT_TASKS with rate in [0.2, 0.8]"}
    (ROOT / PILOT_DIR / "pilot.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


# ---- test set ------------------------------------------------------------------------------------

TEST_FILE = DATA / "pace_decisive_test.jsonl"
# (split, task, parameters, size, seed). reasoning-gym derives item i from seed + i, so each block's
# seeds (seed .. seed + size - 1) stay apart from every other block's and from training (2026..2145)
# and the pilot (900100..900139); the plan's 900001 / 900002 would have shared 49 seeds between the
# in-distribution and harder chain_sum blocks.
TEST_BLOCKS = [
    ("in_dist", "chain_sum", TRAIN_BANDS[0][1], 50, 900_001),
    ("in_dist", "basic_arithmetic", TRAIN_BANDS[1][1], 50, 900_001),
    ("harder", "chain_sum", TRAIN_BANDS[2][1], 100, 920_001),
]
OOD_SEED = 940_001


def split_of(problem_id: str) -> str:
    """in_dist, harder or ood, from a test problem's id (ids carry the block's suffix)."""
    return problem_id.rsplit("@", 1)[-1]


def step_testset():
    """100 in-distribution + 100 harder + 100 OOD problems of the pilot's family, written once. The
    loader's decontamination against the 360 training problems runs in `heal eval`."""
    pilot = ROOT / PILOT_DIR / "pilot.json"
    if not pilot.exists():
        sys.exit("no OOD family yet: run `python experiments/pace_decisive.py pilot` first")
    family = json.loads(pilot.read_text())["ood_family"]
    if family is None:  # the plan's rule: then there is no OOD split (the report says so)
        print(f"{pilot.relative_to(ROOT)}: no pilot family has a teacher pass rate in [0.2, 0.8]: no OOD split")
    if not TEST_FILE.exists():
        rows = []
        ood = [("ood", family, {}, 100, OOD_SEED)] if family else []
        for split, task, params, size, seed in TEST_BLOCKS + ood:
            rows += band(task, params, f"@{split}", size, seed)
        assert len({r["id"] for r in rows}) == len(rows) == 200 + 100 * len(ood)
        atomic_write_jsonl(TEST_FILE, rows)
    rows = list(read_jsonl(TEST_FILE))
    counts = defaultdict(int)
    for r in rows:
        counts[split_of(r["id"])] += 1
    print(f"{TEST_FILE.relative_to(ROOT)}: {len(rows)} problems {dict(counts)} (OOD family {family})")


def step_teacher_eval():
    """The teacher on the test set: eval.n_samples scored samples and eval.tier_samples tier samples."""
    step_testset()
    print(json.dumps(heal.evaluate(config(), models={})["models"].get("teacher"), indent=2))


# ---- students ----------------------------------------------------------------------------------------

STUDENTS = ROOT / "experiments" / "runs" / "pace-decisive-students"
SEEDS = (0, 1)
# (budget, methods), in the plan's order: the primary contrast's runs first. The paper budget trains
# only sft_rs: heal_continuous's schedule does not depend on match_budget (its steps are HEAL's at 5
# epochs a stage either way), so the paper-budget contrast pairs it with the matched run's weights.
RUNS = [("matched", ["sft_rs", "heal_continuous"]), ("paper", ["sft_rs"]),
        ("matched", ["star", "heal_no_curriculum", "heal"])]
# What a student run reads from the teacher's run (linked, read only; training writes only data/ and
# checkpoints/ of its own run).
TEACHER_FILES = ("problems.jsonl", "samples.jsonl", "tiers.jsonl", "sample_summary.json", "sample_config.json",
                 "guided.jsonl", "repairs.jsonl", "scored.jsonl", "reference.jsonl", "scorer_config.json")


def student_run(budget: str, seed: int) -> Path:
    return STUDENTS / f"{budget}-s{seed}"


def student_config(budget: str, seed: int):
    """One student run's config: the yaml's, its seed and budget, and the schedule the student pilot chose."""
    pilot = STUDENTS / "pilot.json"
    if not pilot.exists():
        sys.exit("no student pilot yet: run `python experiments/pace_decisive.py student-pilot` first")
    chosen = json.loads(pilot.read_text())
    return heal.load_config(CONFIG, {"output_dir": str(student_run(budget, seed).relative_to(ROOT)),
                                     "train.seed": seed, "train.match_budget": budget == "matched",
                                     **schedule(chosen["choice"], chosen["epochs"])})


def link_teacher_data(run: Path) -> None:
    teacher = ROOT / config().output_dir
    run.mkdir(parents=True, exist_ok=True)
    for name in TEACHER_FILES:
        if (teacher / name).exists() and not os.path.lexists(run / name):
            os.symlink(os.path.relpath(teacher / name, run), run / name)


PILOT_STEPS = 20
TRAIN_HOURS = 45  # the plan's training budget: every run of both seeds
# Rank 8 (4.4M parameters on the 0.5B, 45x the 97k completion tokens of D1+D2+D3: Thinking
# Machines' rule of thumb for LoRA matching full fine-tuning asks for at least as many parameters as
# completion tokens), alpha 32 (their fixed alpha, under which the best learning rate hardly depends
# on rank). Rank 64 was planned; 8 keeps a run's state between machines to ~50 MB (PLAN.md, "Changes").
LORA = {"r": 8, "alpha": 32, "target_modules": "all-linear", "merge": True}
# LoRA's best learning rate is about 10x full fine-tuning's (Schulman et al. 2025, "LoRA Without
# Regret"; TRL's guide of that name): the paper's 1e-5 would leave a LoRA student nearly untrained.
LORA_LR = 1e-4


def schedule(variant: str, epochs: float = 5.0) -> dict:
    """The config overrides of a training variant at `epochs` per stage (and per one-stage run).
    Full fine-tuning recomputes activations (its fp32 gradients and Adam state leave no room for
    them in 24 GB); LoRA keeps them (faster) in two micro-batches of 4 per optimizer step (a batch
    of 8 without recomputation outgrew 22 GB: `python benchmarks/train_step_memory.py`) and trains at
    LORA_LR."""
    out = {f"train.stages.{k}.epochs": epochs for k in ("I", "II", "III")} | {"train.single.epochs": epochs}
    if variant == "full":
        return out | {"train.lora": None, "train.gradient_checkpointing": True}
    lrs = {f"train.stages.{k}.learning_rate": LORA_LR for k in ("I", "II", "III")} | {"train.single.learning_rate": LORA_LR}
    return out | lrs | {"train.lora": LORA, "train.gradient_checkpointing": False, "train.batch_size": 4,
                        "train.grad_accum": 2}


def choose_schedule(seconds_per_step: dict[str, float], sizes: dict[str, int], batch: dict[str, int]) -> dict:
    """The plan's rule: full fine-tuning at 5 epochs a stage if every run of both seeds fits in
    TRAIN_HOURS; else LoRA at the most epochs (5, 4, 3, 2) that fits; else LoRA at 1 epoch. batch:
    each variant's examples per optimizer step."""
    def hours(variant: str, epochs: int) -> float:
        return seconds_per_step[variant] * plan_steps(sizes, batch[variant], epochs)["per_seed"] * len(SEEDS) / 3600

    if hours("full", 5) < TRAIN_HOURS:
        return {"choice": "full", "epochs": 5, "projected_hours": hours("full", 5)}
    epochs = next((e for e in (5, 4, 3, 2) if hours("lora", e) < TRAIN_HOURS), 1)
    return {"choice": "lora", "epochs": epochs, "projected_hours": hours("lora", epochs)}


def plan_steps(sizes: dict[str, int], batch: int, epochs: float = 5.0) -> dict[str, int]:
    """Optimizer steps of one seed's runs, as heal counts them: HEAL's curriculum H (D1, D1+D2,
    D1+D2+D3 at `epochs` each); matched sft_rs, star, heal_no_curriculum, heal_continuous and heal take
    H each; paper sft_rs 5 epochs of D1."""
    def steps(n: int) -> int:
        return int(np.ceil(epochs * max(1, int(np.ceil(n / batch)))))

    d1, d2, d3 = sizes.get("D1", 0), sizes.get("D2", 0), sizes.get("D3", 0)
    h = steps(d1) + steps(d1 + d2) + steps(d1 + d2 + d3)
    return {"heal_curriculum": h, "paper_sft_rs": steps(d1), "per_seed": 5 * h + steps(d1)}


def step_student_pilot():
    """PILOT_STEPS optimizer steps of sft_rs with full fine-tuning and with LoRA (each as the plan would
    train it), alone on the machine; the plan's training time projected from each; choose_schedule's
    rule picks the variant and the epochs per stage. Writes STUDENTS/pilot.json."""
    from heal.pace import PRUNED, build_data, prune_stage

    if not (ROOT / config().output_dir / "scored.jsonl").exists():
        sys.exit("no PURE scores yet: run `python experiments/pace_decisive.py teacher-data` first")
    out, seconds, examples_per_step = {}, {}, {}
    for variant in ("full", "lora"):
        run = STUDENTS / f"pilot-{variant}"
        link_teacher_data(run)
        over = {"output_dir": str(run.relative_to(ROOT)), "train.match_budget": False, **schedule(variant)}
        cfg = heal.load_config(CONFIG, over)
        sizes = build_data(cfg, print)
        per_step = examples_per_step[variant] = cfg.train.batch_size * cfg.train.grad_accum  # 8 either way
        batches = int(np.ceil(sizes["D1"] / per_step))
        # ceil(epochs * batches) optimizer steps: just under PILOT_STEPS / batches epochs gives PILOT_STEPS
        heal.train(heal.load_config(CONFIG, over | {"train.single.epochs": (PILOT_STEPS - 0.5) / batches}),
                   methods=["sft_rs"])
        stage = run / "checkpoints" / "sft_rs" / "stage-single"
        meta = json.loads((stage / "heal_stage.json").read_text())
        # a pilot resumed from a checkpoint timed only the steps after it (steps_run of them)
        seconds[variant] = meta["train_runtime_s"] / meta.get("steps_run", meta["steps"])
        out[variant] = {"steps": meta["steps"], "timed_steps": meta.get("steps_run", meta["steps"]),
                        "seconds_per_step": seconds[variant], "batch_size": cfg.train.batch_size,
                        "grad_accum": cfg.train.grad_accum, "plan_steps_at_5_epochs": plan_steps(sizes, per_step)}
        if (stage / "DONE").exists() and not (stage / PRUNED).exists():
            prune_stage(stage)  # 2.5 GB of weights nothing reads (the plan's disk budget leaves them out)
    out |= choose_schedule(seconds, sizes, examples_per_step)
    out["rule"] = (f"full fine-tuning at 5 epochs a stage if every run of both seeds projects under {TRAIN_HOURS} h; "
                   "else LoRA at the most epochs (5, 4, 3, 2) under it; else LoRA at 1")
    (STUDENTS / "pilot.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


def step_train(runs: list[tuple[str, list[str]]] = RUNS):
    """Every student run of the plan, or `runs` of it (each resumes: finished stages are skipped)."""
    if not (ROOT / config().output_dir / "scored.jsonl").exists():
        sys.exit("no PURE scores yet: run `python experiments/pace_decisive.py teacher-data` first")
    for budget, methods in runs:
        for seed in SEEDS:
            link_teacher_data(student_run(budget, seed))
            restore_carried(student_run(budget, seed))
            print(f"== {budget} budget, seed {seed}: {', '.join(methods)}")
            heal.train(student_config(budget, seed), methods=methods)


# The students' training state between machines. A session's machine may not come back, and the student
# runs' folders hold gigabytes (merged weights, GGUFs) that are not committed; what rebuilds them is
# small under LoRA: each finished stage's record and adapter (heal rebuilds the merged weights from
# them), a continuous stage's optimizer state, and the newest complete mid-stage checkpoint (adapter,
# optimizer, scheduler, RNG, trainer state: a resumed stage goes on exactly where it stopped). `carry`
# copies those into CARRY, which is committed; `train` puts back what a new machine lacks.
CARRY = ROOT / "experiments" / "runs" / "pace-decisive-carry"
# a finished stage's files, DONE last: a copy cut short is no finished stage
STAGE_FILES = ("heal_stage.json", "PRUNED", "optimizer.pt", "adapter", "DONE")
# a mid-stage checkpoint's tokenizer files: the student's own, not needed to resume
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja")
# what a complete mid-stage checkpoint has (Trainer writes trainer_state.json last; without the optimizer
# and scheduler it would resume with fresh ones, silently)
CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
CHECKPOINT_WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")


def newest_checkpoint(partial: Path) -> Path | None:
    """A stage's newest complete mid-stage checkpoint; unlike heal's own finder it deletes nothing, so
    it can look while training is paused mid-write, and it also wants the optimizer, scheduler and
    weights files (a carried copy must resume exactly, not with fresh ones)."""
    for ckpt in checkpoints_newest_first(partial):
        if all((ckpt / f).exists() for f in CHECKPOINT_FILES) and any((ckpt / f).exists() for f in CHECKPOINT_WEIGHTS):
            try:
                json.loads((ckpt / "trainer_state.json").read_text())
                return ckpt
            except (OSError, ValueError):
                continue
    return None


def stage_units(run: Path) -> dict[str, list[tuple[Path, str]]]:
    """A student run's training state as units, "checkpoints/<method>/<folder>" -> [(file, path in the
    unit)]: each finished LoRA stage (STAGE_FILES), and each unfinished stage's newest complete
    mid-stage checkpoint with its fingerprint marker."""
    units: dict[str, list[tuple[Path, str]]] = {}

    def files(path: Path, under: Path) -> list[tuple[Path, str]]:
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        return [(f, str(f.relative_to(under))) for f in found]

    for stage in sorted((run / "checkpoints").glob("*/stage-*")):
        key = str(stage.relative_to(run))
        if stage.name.endswith(".partial"):
            done = stage.with_name(stage.name.removesuffix(".partial"))
            ckpt = newest_checkpoint(stage)
            if ckpt and (stage / "heal_fingerprint").exists() and not (done / "DONE").exists():
                units[key] = [(stage / "heal_fingerprint", "heal_fingerprint")] + [
                    (f, rel) for f, rel in files(ckpt, stage) if Path(rel).name not in TOKENIZER_FILES]
        elif (stage / "DONE").exists() and (stage / "adapter").exists():
            units[key] = [pair for name in STAGE_FILES if (stage / name).exists() for pair in files(stage / name, stage)]
    return units


def fingerprint(unit: Path) -> str | None:
    """Which stage (data, plan, settings) a unit's state belongs to: a finished stage's record, or a
    mid-stage checkpoint's marker. State of another fingerprint is another stage's, never newer."""
    try:
        if unit.name.endswith(".partial"):
            return (unit / "heal_fingerprint").read_text()
        return json.loads((unit / "heal_stage.json").read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None


def recover_units(folder: Path) -> None:
    """Undo what a put_unit cut short under folder: a replaced unit whose new copy never arrived goes
    back; an incoming copy that never arrived goes."""
    for old in folder.glob("**/.replaced-*"):
        dest = old.with_name(old.name.removeprefix(".replaced-"))
        os.replace(old, dest) if not dest.exists() else shutil.rmtree(old)
    for tmp in folder.glob("**/.incoming-*"):
        shutil.rmtree(tmp)


def put_unit(files: list[tuple[Path, str]], dest: Path) -> None:
    """Copy a unit's files into dest, replacing what was there, through a folder beside it: a copy cut
    short never stands where a complete one is looked for."""
    tmp, old = dest.with_name(".incoming-" + dest.name), dest.with_name(".replaced-" + dest.name)
    for path in (tmp, old):
        shutil.rmtree(path, ignore_errors=True)
    for src, rel in files:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tmp / rel)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def same_unit(files: list[tuple[Path, str]], dest: Path) -> bool:
    there = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) if dest.exists() else []
    return there == sorted(rel for _, rel in files) and all(
        src.stat().st_size == (dest / rel).stat().st_size and src.read_bytes() == (dest / rel).read_bytes()
        for src, rel in files)


def merge_final(src: Path, dest: Path) -> None:
    """checkpoints/final.json (method -> its result's folder): dest gains the methods only src has."""
    if not src.exists():
        return
    have = json.loads(dest.read_text()) if dest.exists() else {}
    if set(json.loads(src.read_text())) - set(have):
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(dest, json.dumps(json.loads(src.read_text()) | have, indent=2) + "\n")


def step_carry():
    """Copy every student run's training state (stage_units, and final.json) into CARRY: commit CARRY
    afterwards. Only forward: a finished stage replaces its mid-stage checkpoint, a newer checkpoint an
    older one; what CARRY holds and this machine lacks stays. Run it while training is paused or
    stopped."""
    total = 0
    if CARRY.exists():
        recover_units(CARRY)
    for run in sorted(p for p in STUDENTS.iterdir() if p.is_dir() and not p.name.startswith("pilot")):
        dest, size = CARRY / run.name, 0
        for key, files in stage_units(run).items():
            size += sum(f.stat().st_size for f, _ in files)
            if key.endswith(".partial"):
                mine = run / key
                done, theirs = dest / key.removesuffix(".partial"), dest / key
                if (done / "DONE").exists() and fingerprint(done) == fingerprint(mine):
                    continue  # the stage is done elsewhere
                newest = newest_checkpoint(theirs) if theirs.exists() else None
                ahead = newest and checkpoint_step(newest) >= checkpoint_step(newest_checkpoint(mine))
                if ahead and fingerprint(theirs) == fingerprint(mine):
                    continue  # as far or further elsewhere
                shutil.rmtree(done, ignore_errors=True)  # another fingerprint's: this stage trains anew
            if not same_unit(files, dest / key):
                put_unit(files, dest / key)
                print(f"{run.name}: {key} carried")
            if not key.endswith(".partial"):
                shutil.rmtree(dest / (key + ".partial"), ignore_errors=True)  # the stage is done
        merge_final(run / "checkpoints" / "final.json", dest / "checkpoints" / "final.json")
        total += size
    held = sum(f.stat().st_size for f in CARRY.rglob("*") if f.is_file()) if CARRY.exists() else 0
    print(f"{CARRY.relative_to(ROOT)}: {held / 1e6:.0f} MB ({total / 1e6:.0f} MB from this machine): commit it")


def restore_carried(run: Path) -> None:
    """Put back into a student run what CARRY holds and the run lacks: finished stages (heal rebuilds
    their merged weights from the adapters when the next stage or eval needs them), a mid-stage
    checkpoint newer than any the run has, and final.json's methods."""
    src = CARRY / run.name
    if not src.exists():
        return
    recover_units(src)
    for stage in sorted(src.glob("checkpoints/*/stage-*")):
        key, local = str(stage.relative_to(src)), run / stage.relative_to(src)
        if stage.name.endswith(".partial"):
            done = local.with_name(local.name.removesuffix(".partial"))
            mine = newest_checkpoint(local) if local.exists() else None
            theirs = newest_checkpoint(stage)
            if ((done / "DONE").exists() and fingerprint(done) == fingerprint(stage)) or theirs is None:
                continue
            if mine and (fingerprint(local) != fingerprint(stage) or checkpoint_step(mine) >= checkpoint_step(theirs)):
                continue  # this machine's own progress (heal's training tells which fingerprint is current)
        elif (local / "DONE").exists() or not (stage / "DONE").exists():
            continue
        # a finished stage replaces what is there (an unfinished retrain's leftover weights among them)
        put_unit([(f, str(f.relative_to(stage))) for f in sorted(stage.rglob("*")) if f.is_file()], local)
        print(f"{run.name}: {key} restored from {CARRY.relative_to(ROOT)}")
    merge_final(src / "checkpoints" / "final.json", run / "checkpoints" / "final.json")


def restore_students() -> None:
    """restore_carried for every student run CARRY holds (eval and analyze on a new machine)."""
    for budget in ("matched", "paper"):
        for seed in SEEDS:
            if (CARRY / student_run(budget, seed).name).exists():
                link_teacher_data(student_run(budget, seed))
                restore_carried(student_run(budget, seed))


def student_models() -> dict[str, str]:
    """"<method>.<budget>.s<seed>" -> weights of every finished student run."""
    from heal.evaluation import trained_models

    out = {}
    for budget in ("matched", "paper"):
        for seed in SEEDS:
            run = student_run(budget, seed)
            for method, path in (trained_models(run) if run.exists() else {}).items():
                out[f"{method}.{budget}.s{seed}"] = path
    return out


def step_eval():
    """Every trained student (and the untrained one as `base`) on the test set, beside the teacher."""
    step_testset()
    restore_students()
    models = {**student_models(), "base": config().train.student}
    heal.evaluate(config(), models=models)
    print(f"evaluated: {', '.join(models)}")


# ---- analysis ----------------------------------------------------------------------------------------

BOOT = 10_000
PRIMARY = ("heal_continuous.matched", "sft_rs.matched")
SECONDARY = [("star.matched", "sft_rs.matched"), ("heal_no_curriculum.matched", "sft_rs.matched"),
             ("heal.matched", "sft_rs.matched"), ("heal_continuous.matched", "sft_rs.paper")]


def per_problem(evals: list[dict], n_samples: int, cells: dict | None = None) -> dict[str, dict[str, float]]:
    """"<method>.<budget>" -> problem -> mean correctness over its scored samples and every training
    seed (the plan's unit of pairing). Seeds are pooled only where a problem has records of each."""
    return {name: {p: float(np.mean([np.mean([r["correct"] is True for r in rs]) for rs in per.values()]))
                   for p, per in by_problem.items()}
            for name, by_problem in (cells or scored_cells(evals, n_samples)).items()}


def scored_cells(evals: list[dict], n_samples: int) -> dict[str, dict[str, dict[str, list[dict]]]]:
    """"<method>.<budget>" -> problem -> seed -> its scored records (greedy and tier samples, and
    samples beyond n_samples, score nobody); only the problems that have records of every seed."""
    cells: dict[str, dict[str, dict[str, list[dict]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in evals:
        if isinstance(r["sample"], int) and r["sample"] < n_samples:
            parts = r["model"].split(".")
            name, seed = (".".join(parts[:2]), parts[2]) if len(parts) == 3 else (r["model"], "-")
            cells[name][r["problem_id"]][seed].append(r)
    out = {}
    for name, by_problem in cells.items():
        seeds = {s for per in by_problem.values() for s in per}
        out[name] = {p: dict(per) for p, per in by_problem.items() if set(per) == seeds}
    return out


def describe(evals: list[dict], n_samples: int, splits: dict[str, str],
             cells: dict | None = None) -> dict[str, dict[str, dict]]:
    """The plan's descriptive metrics per "<method>.<budget>" and split ("all" and each split): maj@n and
    pass@n (unbiased) per problem and seed, then averaged over seeds per problem and over problems;
    mean tokens and truncation rate over samples; verified share: the correct samples whose derivation
    the step checker accepts. Problems lacking a seed's records are left out, as in per_problem."""
    from heal.evaluation import majority_correct, pass_at_k_estimate

    out: dict[str, dict[str, dict]] = {}
    for name, by_problem in sorted((cells or scored_cells(evals, n_samples)).items()):
        out[name] = {}
        for split in ["all"] + sorted(set(splits.values())):
            mine = {p: per for p, per in by_problem.items() if split == "all" or splits.get(p) == split}
            recs = [r for per in mine.values() for rs in per.values() for r in rs]
            if not recs:
                continue
            maj, pas = [], []
            for per in mine.values():
                runs = [sorted(rs, key=lambda r: r["sample"]) for rs in per.values()]
                maj.append(np.mean([majority_correct([(r.get("pred"), r["correct"]) for r in rs]) for rs in runs]))
                if all(len(rs) == n_samples for rs in runs):  # pass@n of a problem still being sampled: unknown
                    pas.append(np.mean([pass_at_k_estimate(n_samples, sum(r["correct"] is True for r in rs), n_samples)
                                        for rs in runs]))
            correct = [r for r in recs if r["correct"] is True]
            out[name][split] = {
                "problems": len(mine), f"maj@{n_samples}": float(np.mean(maj)), f"pass@{n_samples}": float(np.mean(pas)) if pas else None,
                "mean_tokens": float(np.mean([r["n_tokens"] for r in recs])),
                "truncation_rate": float(np.mean([bool(r.get("truncated")) for r in recs])),
                "verified_share_of_correct": (float(np.mean([bool(r.get("derivation_ok")) for r in correct]))
                                              if correct else None)}
    return out


def contrast(a: dict[str, float], b: dict[str, float], rng: np.random.Generator, boot: int = BOOT) -> dict:
    """a - b over the problems both have: mean, paired SE, a two-sided paired bootstrap p-value (the
    share of resampled means at least as far from 0 in the other direction, doubled) and a sign-flip
    permutation p-value (exact enumeration up to 20 nonzero problems, else `boot` random flips)."""
    pids = sorted(set(a) & set(b))
    d = np.asarray([a[p] - b[p] for p in pids])
    n = len(d)
    if n < 2:
        return {"diff": float(d.mean()) if n else None, "se": None, "ci95": None, "problems": n, "p_bootstrap": None,
                "p_sign_flip": None}
    mean, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(n))
    means = d[rng.integers(n, size=(boot, n))].mean(axis=1)
    p_boot = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    ci95 = [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]
    nz = d[d != 0]
    if len(nz) == 0:
        p_flip = 1.0
    elif len(nz) <= 20:  # every sign pattern
        signs = np.array(np.meshgrid(*[[-1, 1]] * len(nz))).reshape(len(nz), -1).T
        p_flip = float(np.mean(np.abs(signs @ nz) >= abs(nz.sum()) - 1e-12))
    else:
        signs = rng.choice([-1, 1], size=(boot, len(nz)))
        p_flip = float((1 + np.sum(np.abs(signs @ nz) >= abs(nz.sum()) - 1e-12)) / (boot + 1))
    return {"diff": mean, "se": se, "ci95": ci95, "problems": n, "p_bootstrap": p_boot, "p_sign_flip": p_flip}


def _rng(seed: int, *names: str) -> np.random.Generator:
    """The resamples of one contrast (and split), seeded by its names: its interval and p-values do not
    move when another model's records arrive and add contrasts before it."""
    return np.random.default_rng([seed, zlib.crc32(" ".join(names).encode())])


def analyze(evals: list[dict], n_samples: int, splits: dict[str, str], seed: int = 0,
            tiers: dict[str, str] | None = None) -> dict:
    """The plan's contrasts: the primary (decided when its SE <= 0.025), the secondary with Holm over
    their sign-flip p-values, each also per split; every model's avg@n per split and per test tier
    (`tiers`: problem -> the teacher's tier from its own tier samples) as description."""
    tiers = tiers or {}
    cells = scored_cells(evals, n_samples)  # once: per_problem, describe and coverage all read it
    pp = per_problem(evals, n_samples, cells)

    def coverage(name: str) -> dict:
        """Which seeds a model has records of, and whether it has all n samples of every test problem
        for every planned seed (SEEDS; teacher and base: none): only then can a contrast decide."""
        have = cells.get(name, {})
        seeds = sorted({s for per in have.values() for s in per})
        want = [f"s{s}" for s in SEEDS] if name.count(".") == 1 else ["-"]
        full = (seeds == want and set(have) == set(splits)
                and all(len(rs) == n_samples for per in have.values() for rs in per.values()))
        return {"seeds": [s for s in seeds if s != "-"], "complete": full}

    def mean_se(values: list[float]) -> dict:
        v = np.asarray(values)
        return {"mean": float(v.mean()) if len(v) else None,
                "se": float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None, "problems": len(v)}

    tier_names = [t for t in ("solved", "hard", "corner") if t in set(tiers.values())]
    out = {"n_samples": n_samples, "tiers": {t: sum(v == t for v in tiers.values()) for t in tier_names},
           "models": {name: mean_se(list(v.values())) | {
               "per_split": {s: mean_se([x for p, x in v.items() if splits.get(p) == s])
                             for s in sorted(set(splits.values()))},
               "per_tier": {t: mean_se([x for p, x in v.items() if tiers.get(p) == t]) for t in tier_names}}
               | coverage(name) for name, v in sorted(pp.items())}}

    for name, d in describe(evals, n_samples, splits, cells).items():
        out["models"][name]["describe"] = d

    def one(a: str, b: str) -> dict:
        if a not in pp or b not in pp:
            return {"missing": [m for m in (a, b) if m not in pp]}
        c = contrast(pp[a], pp[b], _rng(seed, a, b))
        # a partial evaluation (interrupted, or a seed not trained yet) is described, never tested: the
        # plan tests on every test problem, every sample and both seeds of both models
        c["incomplete"] = [m for m in (a, b) if not out["models"][m]["complete"]]
        c["per_split"] = {s: contrast({p: v for p, v in pp[a].items() if splits.get(p) == s}, pp[b], _rng(seed, a, b, s))
                          for s in sorted(set(splits.values()))}
        return c

    prim = one(*PRIMARY)
    if prim.get("se") is not None:
        prim["decided"] = prim["se"] <= 0.025 and not prim["incomplete"]
    out["primary"] = {"contrast": " - ".join(PRIMARY), **prim}
    sec = [{"contrast": " - ".join(pair), **one(*pair)} for pair in SECONDARY]
    tested = [c for c in sec if c.get("p_sign_flip") is not None and not c["incomplete"]]
    for c, adj in zip(tested, holm([c["p_sign_flip"] for c in tested])):
        c["p_holm"] = adj
    out["secondary"] = sec
    return out


def _f(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _diff_se(c: dict) -> str:
    """A per-split difference with its paired SE (a split with one problem has none)."""
    return _f(c["diff"]) + ("" if c.get("se") is None else f" ± {_f(c['se'])}")


def _p(x) -> str:
    """A p-value: a bootstrap share of 0 is below one in BOOT, not zero."""
    return "-" if x is None else (f"< {1 / BOOT:g}" if x < 1 / BOOT else f"{x:.4f}")


def analysis_markdown(out: dict) -> str:
    """The analysis as tables: every model per split, then the contrasts. Nothing is bolded: the
    reader compares the p-values (Holm-adjusted for the secondary contrasts) with alpha 0.05."""
    splits = sorted({s for m in out["models"].values() for s in m["per_split"]})
    n = out["n_samples"]
    lines = [f"avg@{n} per model: per problem the mean over its {n} samples and the training seeds, then the mean "
             "over problems, ± its SE over problems.", "",
             "| model | all | " + " | ".join(splits) + " |", "|---" * (2 + len(splits)) + "|"]
    for name, m in out["models"].items():
        cells = [f"{_f(m['mean'])} ± {_f(m['se'])} ({m['problems']}"
                 + (f"; seeds {', '.join(m['seeds'])}" if m.get("seeds") else "")
                 + ("" if m.get("complete", True) else "; incomplete") + ")"]
        cells += [f"{_f(m['per_split'][s]['mean'])} ± {_f(m['per_split'][s]['se'])}" for s in splits]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    tier_names = list(out.get("tiers") or {})
    if tier_names:
        lines += ["", f"avg@{n} per test tier (the teacher's pass rate over its own tier samples, not the ones that "
                      "score it; " + ", ".join(f"{t} {k} problems" for t, k in out["tiers"].items()) + "):", "",
                  "| model | " + " | ".join(tier_names) + " |", "|---" * (1 + len(tier_names)) + "|"]
        for name, m in out["models"].items():
            lines.append(f"| {name} | " + " | ".join(f"{_f(m['per_tier'][t]['mean'])} ± {_f(m['per_tier'][t]['se'])}"
                                                     for t in tier_names) + " |")
    n_ = out["n_samples"]
    lines += ["", f"The plan's other metrics per model and split: maj@{n_} and pass@{n_} (unbiased) per problem and "
                  "seed, averaged over the seeds and then the problems; mean tokens and truncation rate over samples; "
                  "verified: the share of correct samples whose derivation the arithmetic step checker accepts.", "",
              f"| model | split | problems | maj@{n_} | pass@{n_} | mean tokens | truncated | verified / correct |",
              "|---" * 8 + "|"]
    for name, m in out["models"].items():
        for split, d in (m.get("describe") or {}).items():
            lines.append(f"| {name} | {split} | {d['problems']} | {_f(d[f'maj@{n_}'])} | {_f(d[f'pass@{n_}'])} | "
                         f"{d['mean_tokens']:.0f} | {_f(d['truncation_rate'])} | {_f(d['verified_share_of_correct'])} |")
    n_holm = sum(c.get("p_holm") is not None for c in out["secondary"])
    holm_over = f"{n_holm} of {len(out['secondary'])}" if n_holm else "none yet"
    n_partial = sum(bool(c.get("incomplete")) for c in out["secondary"])
    lines += ["", "Contrasts (a - b, paired over problems): SE over problems, bootstrap 95% interval and two-sided "
              "p-value (10,000 resamples of problems), sign-flip permutation p-value; the secondary ones also "
              f"Holm-adjusted over the secondary contrasts whose records are complete ({holm_over})"
              + (f"; {n_partial} more with partial records, marked incomplete: described, not tested" if n_partial else "")
              + ".", "",
              "| contrast | diff | SE | 95% interval | p bootstrap | p sign-flip | p Holm | "
              + " | ".join(f"diff {s} ± SE" for s in splits) + " |", "|---" * (7 + len(splits)) + "|"]
    for c in [out["primary"] | {"role": "primary"}] + [c | {"role": "secondary"} for c in out["secondary"]]:
        if "missing" in c:
            lines.append(f"| {c['contrast']} ({c['role']}) | not yet: no records of {', '.join(c['missing'])} |"
                         + " |" * (5 + len(splits)))
            continue
        ci = "-" if c["ci95"] is None else f"[{_f(c['ci95'][0])}, {_f(c['ci95'][1])}]"
        role = c["role"] + (f"; incomplete: {', '.join(c['incomplete'])}, {c['problems']} problems"
                            if c.get("incomplete") else "")
        lines.append(f"| {c['contrast']} ({role}) | {_f(c['diff'])} | {_f(c['se'])} | {ci} | "
                     + ("- | - | - | " if c.get("incomplete") else  # described, not tested: no p-values
                        f"{_p(c['p_bootstrap'])} | {_p(c['p_sign_flip'])} | {_p(c.get('p_holm'))} | ")
                     + " | ".join(_diff_se(c["per_split"][s]) for s in splits) + " |")
    p = out["primary"]
    if p.get("se") is not None and p.get("incomplete"):
        lines += ["", f"Primary contrast not decided: the records of {', '.join(p['incomplete'])} are incomplete "
                      f"(the plan decides on every test problem x {n} samples x seeds "
                      f"{', '.join(f's{s}' for s in SEEDS)}); SE so far {_f(p['se'])}."]
    elif p.get("se") is not None:
        lines += ["", f"Primary contrast {'decided' if p['decided'] else 'not decided'}: SE {_f(p['se'])} "
                      f"({'<=' if p['decided'] else '>'} 0.025)."]
    return "\n".join(lines) + "\n"


def contrast_plot(out: dict, path: Path) -> None:
    """Every contrast's difference with its bootstrap 95% interval, over all problems and per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [c for c in [out["primary"]] + out["secondary"] if "missing" not in c and c.get("ci95")]
    splits = sorted({s for c in rows for s in c["per_split"]})
    fig, ax = plt.subplots(figsize=(7, 1 + 0.9 * max(1, len(rows))))
    for i, c in enumerate(rows):
        y = len(rows) - 1 - i
        for k, (label, r) in enumerate([("all", c)] + [(s, c["per_split"][s]) for s in splits]):
            if r.get("ci95") is None:
                continue
            off = 0.15 * (k - len(splits) / 2)
            ax.errorbar(r["diff"], y + off, xerr=[[r["diff"] - r["ci95"][0]], [r["ci95"][1] - r["diff"]]],
                        fmt="o" if k == 0 else ".", color=f"C{k}", ms=6 if k == 0 else 4,
                        label=label if i == 0 else None, alpha=1 if k == 0 else 0.7)
    ax.axvline(0, color="gray", lw=0.8)
    ax.set_yticks(range(len(rows)), [c["contrast"] + (" (incomplete)" if c.get("incomplete") else "")
                                     for c in reversed(rows)], fontsize=7)
    ax.set_xlabel(f"difference in avg@{out['n_samples']} (bootstrap 95% interval)")
    if rows:
        ax.legend(fontsize=7, loc="best")
    ax.set_title("PACE decisive run: contrasts (first row: primary)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


RESULTS = ROOT / "docs" / "results" / "pace-decisive"


def step_analyze():
    """analysis.json, analysis.md and contrasts.png in docs/results/pace-decisive/, from the records."""
    from heal.evaluation import model_tag, teacher_tiers
    from heal.records import tier_index

    restore_students()
    cfg = config()
    run = ROOT / cfg.output_dir
    # Only the records of each model's current weights (a retrained student's old records stay in the
    # store, under their own tag).
    tags = {"teacher": "teacher", "base": "base"} | {name: model_tag(path) for name, path in student_models().items()}
    records = [r for r in read_store(run / "eval" / "evals.jsonl") if r.get("tag") == tags.get(r["model"])]
    splits = {r["id"]: split_of(r["id"]) for r in read_jsonl(run / "eval" / "problems.jsonl")}
    tier_recs = [r for r in records if r["model"] == "teacher" and tier_index(r["sample"]) is not None
                 and tier_index(r["sample"]) < cfg.eval.tier_samples]
    out = analyze(records, cfg.eval.n_samples, splits, tiers=teacher_tiers(cfg, tier_recs))
    (RESULTS / "analysis.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "analysis.md").write_text(analysis_markdown(out))
    contrast_plot(out, RESULTS / "contrasts.png")
    print(analysis_markdown(out))
    print(f"wrote {', '.join(str((RESULTS / f).relative_to(ROOT)) for f in ('analysis.json', 'analysis.md', 'contrasts.png'))}")


def _lines(path: Path) -> int:
    return sum(1 for _ in open(path)) if path.exists() else 0


def step_status():
    """One line per step of the plan: done, how far, or not started."""
    cfg = config()
    run = ROOT / cfg.output_dir
    print(f"stage0:        {_lines(run / 'samples.jsonl')} of {360 * cfg.sample.k} samples"
          + (" (done)" if (run / "sample_summary.json").exists() else ""))
    print(f"teacher-data:  {_lines(run / 'guided.jsonl')} answer-guided, {_lines(run / 'repairs.jsonl')} repairs, "
          f"{_lines(run / 'scored.jsonl')} PURE-scored")
    if (run / "scored.jsonl").exists():  # the plan's target: at least 80 accepted repairs
        accepted = [r for r in read_jsonl(run / "scored.jsonl") if r["accepted"]]
        for kind in ("repair", "guided"):
            mine = [r for r in accepted if r["kind"] == kind]
            print(f"  PURE accepts {len(mine)} {kind} records on {len({r['problem_id'] for r in mine})} problems")
    pilot = ROOT / PILOT_DIR / "pilot.json"
    print(f"pilot:         {json.loads(pilot.read_text())['ood_family'] if pilot.exists() else 'not done'}"
          f" ({_lines(ROOT / PILOT_DIR / 'samples.jsonl')} of {3 * 40 * 4} samples)")
    print(f"testset:       {_lines(TEST_FILE)} problems")
    evals = list(read_store(run / "eval" / "evals.jsonl")) if (run / "eval" / "evals.jsonl").exists() else []
    per_model: dict[str, int] = defaultdict(int)
    for r in evals:
        per_model[r["model"]] += 1
    spilot = STUDENTS / "pilot.json"
    print(f"student-pilot: {json.loads(spilot.read_text())['choice'] if spilot.exists() else 'not done'}")
    done = student_models() if spilot.exists() else {}
    print(f"train:         {len(done)} of {sum(len(m) for _, m in RUNS) * len(SEEDS)} students: {', '.join(done) or '-'}")
    print("eval:          " + (", ".join(f"{m} {n}" for m, n in sorted(per_model.items())) or "-") + " records")
    # the plan needs about 45 GB for the students' weights and GGUFs (PLAN.md, "Disk")
    print(f"disk:          {shutil.disk_usage(ROOT).free / 1e9:.0f} GB free")


def step_all():
    """Every step in the plan's order; each resumes, so this is the command to restart after any
    interruption. The primary contrast's students are evaluated before the others are trained."""
    step_stage0()
    step_teacher_data()
    step_pilot()
    step_teacher_eval()
    if not (STUDENTS / "pilot.json").exists():
        step_student_pilot()
    step_train(RUNS[:1])
    step_eval()
    step_analyze()
    step_train()
    step_eval()
    step_analyze()


STEPS = {"data": step_data, "stage0": step_stage0, "teacher-data": step_teacher_data, "pilot": step_pilot,
         "testset": step_testset, "teacher-eval": step_teacher_eval,
         "student-pilot": step_student_pilot, "train": step_train, "eval": step_eval,
         "analyze": step_analyze, "carry": step_carry, "status": step_status, "all": step_all}

def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str]) -> None:
    if len(argv) != 1 or argv[0] not in STEPS:
        sys.exit(f"usage: python experiments/pace_decisive.py {{{'|'.join(STEPS)}}}")
    # `nohup ... &` starts the run with SIGINT ignored, and `kill` sends SIGTERM: both stop it the way
    # Ctrl-C does in a terminal (one line; the records so far kept)
    before = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    os.chdir(ROOT)  # the yaml's paths (output_dir, data sources) are relative to the repository
    try:
        STEPS[argv[0]]()
    except KeyboardInterrupt:  # every step appends its records as it goes: nothing finished is lost
        sys.exit(f"interrupted; the records so far are kept: rerun `python experiments/pace_decisive.py {argv[0]}`")
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        sys.exit(f"no space left on the device ({e.filename or e}): free some space (`df -h {ROOT}`) and rerun "
                 f"`python experiments/pace_decisive.py {argv[0]}`; the records so far are kept")
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    main(sys.argv[1:])
