"""Numbers the PACE 0.5B results README quotes beyond report.md: star vs the others, and heal_no_curriculum - star
(what GEAR's repairs add), paired over problems.  python experiments/pace_qwen0.5b_numbers.py"""
import json
from collections import defaultdict
from heal.evaluate import paired_difference
run = "experiments/runs/pace-qwen0.5b"
s = json.load(open(f"{run}/eval/summary.json"))
recs = [json.loads(l) for l in open(f"{run}/eval/evals.jsonl")]
by = defaultdict(lambda: defaultdict(list))
for r in recs:
    if r["sample"] != "greedy":
        by[r["model"]][r["problem_id"]].append(r["correct"])
tiers = {p: ("solved" if c[0] else "corner") for p, c in by["teacher"].items()}
m = s["models"]["star"]
cor = [r for r in recs if r["model"] == "star" and r["correct"]]
print("star pass@1 %.3f ± %.3f solved %.3f corner %.3f verified %d of %d answered %.3f eq %.3f (%d) trunc %.3f" % (
    m["pass@1"], m["se"], m["per_tier"]["solved"]["pass@1"], m["per_tier"]["corner"]["pass@1"],
    sum(r["derivation_ok"] for r in cor), len(cor), m["answer_rate"], m["equation_accuracy"], m["equations"], m["truncation_rate"]))
print("corner solved", sum(1 for p, c in by["star"].items() if tiers[p] == "corner" and c[0]))
def pd(a, b):
    d = paired_difference(by[a], by[b])
    out = [f"{d['diff']:+.3f} ± {d['se']:.3f}"]
    for t in ("solved", "corner"):
        x = paired_difference({p: c for p, c in by[a].items() if tiers[p] == t}, by[b])
        out.append(f"{x['diff']:+.3f} ± {x['se']:.3f}")
    return " | ".join(out)
for a, b in [("star", "sft_rs"), ("star", "heal"), ("heal_no_curriculum", "star")]:
    print(f"{a} - {b}: {pd(a, b)}")
t = json.load(open(f"{run}/checkpoints/star/stage-single/heal_stage.json"))
c = t["loss_curve"]
print("train", t["examples"], t["steps"], round(t["train_loss"], 3), round(sum(c[-5:]) / 5, 3))
