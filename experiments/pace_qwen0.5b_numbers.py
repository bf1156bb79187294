"""Numbers the PACE 0.5B results README quotes beyond report.md: every model's row (corner problems
solved, correct answers with a verified derivation) and the paired differences between the
ablations that report.md (which pairs with sft_rs and heal only) leaves out.
    python experiments/pace_qwen0.5b_numbers.py"""
import json
from collections import defaultdict
from pathlib import Path

from heal.evaluation import paired_difference

run = Path("experiments/runs/pace-qwen0.5b")
s = json.loads((run / "eval" / "summary.json").read_text())
recs = [json.loads(line) for line in open(run / "eval" / "evals.jsonl")]
by = defaultdict(lambda: defaultdict(list))
for r in recs:
    if r["sample"] != "greedy":
        by[r["model"]][r["problem_id"]].append(r["correct"])
tiers = {p: ("solved" if c[0] else "corner") for p, c in by["teacher"].items()}

for name, m in s["models"].items():
    cor = [r for r in recs if r["model"] == name and r["correct"] and r["sample"] != "greedy"]
    corner = sum(1 for p, c in by[name].items() if tiers[p] == "corner" and c[0])
    print(f"{name}: pass@1 {m['pass@1']:.3f} ± {m['se']:.3f} solved {m['per_tier']['solved']['pass@1']:.3f} "
          f"corner {m['per_tier']['corner']['pass@1']:.3f} ({corner} of {sum(t == 'corner' for t in tiers.values())}) "
          f"verified {sum(bool(r['derivation_ok']) for r in cor)} of {len(cor)} answered {m['answer_rate']:.3f} "
          f"eq {m['equation_accuracy']:.3f} ({m['equations']}) trunc {m['truncation_rate']:.3f}")


def paired(a, b):
    out = [paired_difference(by[a], by[b])]
    for t in ("solved", "corner"):
        out.append(paired_difference({p: c for p, c in by[a].items() if tiers[p] == t}, by[b]))
    return " | ".join(f"{d['diff']:+.3f} ± {d['se']:.3f}" for d in out)


print("\npaired (all | solved | corner):")
for a, b in [("star", "sft_rs"), ("star", "heal"), ("heal_no_curriculum", "star"), ("keep_all", "star"),
             ("keep_all", "heal_no_curriculum"), ("heal_no_pure", "heal_no_curriculum"),
             ("heal_continuous", "heal"), ("heal_continuous", "heal_no_curriculum"), ("heal_continuous", "sft_rs")]:
    if a in by and b in by:
        print(f"{a} - {b}: {paired(a, b)}")

print("\ntraining (examples, steps, mean loss, last-5 loss per stage):")
# The run's own stage records where its checkpoints are here; else the copies published with the
# results (the checkpoints stay out of git): docs/results/pace-qwen0.5b/training/METHOD-stage-X.json.
stages = [(m.parent.parent.name, m.parent.name, m) for m in sorted((run / "checkpoints").glob("*/stage-*/heal_stage.json"))]
if not stages:
    for m in sorted(Path("docs/results/pace-qwen0.5b/training").glob("*-stage-*.json")):
        method, stage = m.stem.rsplit("-stage-", 1)
        stages.append((method, f"stage-{stage}", m))
for method, stage, meta in stages:
    t = json.loads(meta.read_text())
    c = t["loss_curve"]
    print(method, stage, t["examples"], t["steps"], round(t["train_loss"], 3), round(sum(c[-5:]) / len(c[-5:]), 3))
