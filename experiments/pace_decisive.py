"""The decisive PACE run (issue 17), step by step; every step resumes. Plan, written before any run:
docs/results/pace-decisive/PLAN.md. Only heal's public API.

    python experiments/pace_decisive.py data          # training problems (360) and the OOD pilot (3 x 40)
    python experiments/pace_decisive.py stage0        # Stage 0 on the 360 (hours on one core; resumes)
    python experiments/pace_decisive.py teacher-data  # hint, repair (GEAR), filter (PURE) on Stage 0
    python experiments/pace_decisive.py pilot         # the OOD pilot: K = 4 on each family's 40, the rule
    python experiments/pace_decisive.py status        # where the run stands

The steps after these (the test set, the teacher's evaluation and tier samples, the student timing
pilot, training and evaluation) are added as the run reaches them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import heal
from heal.store import atomic_write_jsonl

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


def step_status():
    run = ROOT / config().output_dir
    summary = run / "sample_summary.json"
    samples = run / "samples.jsonl"
    n = sum(1 for _ in open(samples)) if samples.exists() else 0
    print(f"Stage 0: {n} of {360 * config().sample.k} samples")
    if summary.exists():
        print(summary.read_text())


STEPS = {"data": step_data, "stage0": step_stage0, "teacher-data": step_teacher_data, "pilot": step_pilot,
         "status": step_status}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in STEPS:
        sys.exit(f"usage: python experiments/pace_decisive.py {{{'|'.join(STEPS)}}}")
    STEPS[sys.argv[1]]()
