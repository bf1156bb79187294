"""`heal report` on a small fixture run: the markdown table, summary.json, data detail and plots."""

import json

import pytest

from helpers import write_tiny_run

from heal.config import load_config
from heal.pace import build_data
from heal.reporting import write_report
from heal.store import atomic_write_jsonl, read_jsonl


def test_report_on_fixture(tmp_path, tiny_model_dir):
    cfg = load_config(write_tiny_run(tmp_path, tiny_model_dir))
    run = tmp_path / "run"
    # The generation stages' step checks: one repair (p0's) has a fabricated derivation.
    for name in ("guided", "repairs"):
        rows = list(read_jsonl(run / f"{name}.jsonl"))
        for r in rows:
            r["derivation_ok"] = not (name == "repairs" and r["problem_id"] == "p0")
            r |= {"source_key": f"{r['problem_id']}/1", "restart": False, "n_tokens": 10}
        atomic_write_jsonl(run / f"{name}.jsonl", rows)
    cfg.train.max_per_problem = 1  # p0..p3 have 2 Stage 0 samples each: ALL 8 -> 4
    build_data(cfg, log=lambda *a: None)
    ev = {"tiers": {"solved": 3, "corner": 1}, "models": {
        name: {"pass@1": acc, "se": 0.1, "n": 4, "problems": 4, "greedy": acc,
               "per_tier": {"solved": {"pass@1": acc}, "corner": {"pass@1": 0.0}}, "verified_share_of_correct": 0.5}
        for name, acc in (("teacher", 0.75), ("sft_rs", 0.25), ("heal", 0.5))}}
    ev["models"]["heal"]["vs_sft_rs"] = {"diff": 0.25, "se": 0.05, "problems": 4,
                                         "per_tier": {"solved": {"diff": 0.25, "se": 0.1}, "corner": {"diff": 0.0, "se": None}}}
    ev["models"]["sft_rs"]["vs_heal"] = {"diff": -0.25, "se": 0.05, "problems": 4,
                                         "per_tier": {"solved": {"diff": -0.25, "se": 0.1}, "corner": {"diff": 0.0, "se": None}}}
    for name, m in ev["models"].items():  # the reasoning-paper metrics (n = 4 samples per problem)
        m |= {"avg@n": {"n": 4, "mean": m["pass@1"], "se": 0.1, "problems": 4}, "maj@k": {"k": 4, "mean": 0.5, "se": 0.2},
              "pass@k": {k: {"mean": m["pass@1"] + 0.05 * int(k)} for k in ("1", "2", "4")}, "mean_tokens": 123.4,
              "truncation_rate_sampled": 0.125}
    del ev["models"]["teacher"]["avg@n"]  # a model evaluated before these metrics existed: no row
    (run / "eval").mkdir()
    (run / "eval" / "summary.json").write_text(json.dumps(ev))
    (run / "eval" / "settings.json").write_text(json.dumps({"sampling": {"temperature": 0.6, "top_p": 0.95}}))
    (run / "eval" / "contamination.json").write_text(json.dumps(
        {"benchmark": "math500", "test": 5, "train": 4, "ngram": 8, "dropped": 1, "hits": [{"test_id": "x"}],
         "by_ngram": {"8": {"contaminated": 1}, "32": {"contaminated": 0}}}))
    # Two trained methods' stage records (what train_stage writes next to the weights).
    for method, stages in {"heal": [("I", ["D1"], 2, [0.5, 0.3]), ("II", ["D1", "D2"], 3, [0.4, 0.2, 0.1])],
                           "sft_rs": [("single", ["D1"], 5, [0.6, 0.5, 0.4, 0.3, 0.2, 0.1])],
                           "heal_continuous": [("I", ["D1"], 2, [0.5, 0.3]), ("II", ["D1", "D2"], 3, [0.4, 0.2, 0.1])],
                           "star": [("single", ["D1", "D2"], 4, [0.5])],  # still training: not in final.json
                           }.items():
        for i, (name, data, examples, curve) in enumerate(stages):
            out = run / "checkpoints" / method / f"stage-{name}"
            out.mkdir(parents=True)
            schedule = {"schedule": {"offset": 2 * i, "total": 5}} if method == "heal_continuous" else {}
            (out / "heal_stage.json").write_text(json.dumps({
                "examples": examples, "steps": len(curve), "train_loss": sum(curve) / len(curve), "loss_curve": curve,
                "stage": {"name": name, "data": data, "learning_rate": 1e-5, "epochs": 1.0} | schedule}))

    (run / "checkpoints" / "final.json").write_text(json.dumps({m: "..." for m in ("heal", "sft_rs", "heal_continuous")}))

    [md_path] = write_report([run])
    md = md_path.read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert {n: m["pass@1"] for n, m in summary["methods"].items()} == {"teacher": 0.75, "sft_rs": 0.25, "heal": 0.5}
    assert summary["methods"]["heal"]["per_tier"] == {"solved": 0.5, "corner": 0.0}
    assert "| heal | 0.500 | 0.100 | 4 | 0.500 | 0.500 | 0.000 | 0.500 | - | - (-) |" in md
    assert "| heal | +0.250 ± 0.050 | +0.250 ± 0.100 | +0.000 ± - |" in md
    # Reasoning-paper metrics: pass@1 is avg@n, so the table's pass@k columns start at k = 2.
    assert "Sampled answers (temperature 0.6, top-p 0.95): avg@4 ± its SE over problems; maj@4" in md
    assert "| method | avg@4 | ± se | maj@4 | pass@2 | pass@4 | mean tokens | truncated |" in md
    assert "| heal | 0.500 | 0.100 | 0.500 | 0.600 | 0.700 | 123.4 | 0.125 |" in md and "| teacher | 0.750 | 0.100 | 0.500" not in md
    assert summary["methods"]["heal"]["pass@k"]["4"]["mean"] == pytest.approx(0.7) and summary["methods"]["heal"]["mean_tokens"] == 123.4
    assert summary["methods"]["teacher"]["avg@n"] is None
    assert summary["contamination"] == {"benchmark": "math500", "test": 5, "train": 4, "ngram": 8, "dropped": 1,
                                        "contaminated": {"8": 1, "32": 0}}
    assert ("Held-out set math500: 5 problems checked against 4 training problems; 8-gram overlap: 1, 32-gram overlap: 0; "
            "dropped (8-grams): 1.") in md
    assert "Difference to heal, paired" in md and "| sft_rs | -0.250 ± 0.050 | -0.250 ± 0.100 | +0.000 ± - |" in md
    # Data per set: D1 = the two answer-correct Stage 0 samples (p0, p1), each a true derivation;
    # D2 / D3 = PURE-accepted candidates of p0 and p2 (rho_step 0.5 <= 2.0), p0's repair not verified.
    d = summary["data_detail"]
    assert (d["D1"]["examples"], d["D1"]["verified"], d["D1"]["problems"]) == (2, 2, 2)
    assert (d["D2"]["examples"], d["D2"]["verified"]) == (2, 2)
    assert (d["D3"]["examples"], d["D3"]["verified"], d["D3"]["verified_problems"]) == (2, 1, 1)
    assert d["D3"]["problems_by_tier"] == {"solved": 1, "hard": 0, "corner": 1}
    assert (d["D3raw"]["examples"], d["D3raw"]["verified"]) == (4, 3)
    assert "| D3 | 2 | 1 (50%) | 2 (1 / 0 / 1) | 1 |" in md
    assert summary["data"]["ALL"] == 4 and summary["data_uncapped"]["ALL"] == 8
    assert "| before the per-problem cap | 2 | 2 | 2 | 4 | 4 | 8 |" in md
    # The training budget per method: stages in order, steps summed, last-5 mean loss.
    assert [st["stage"] for st in summary["training"]["heal"]] == ["I", "II"]
    assert set(summary["training"]) == {"heal", "sft_rs", "heal_continuous"}
    assert summary["training"]["sft_rs"][0]["last_loss"] == pytest.approx(0.3)  # mean of 0.5 .. 0.1
    assert "| heal | I: D1 (2, 2); II: D1+D2 (3, 3) | 5 | per stage | 1e-05 / 1e-05 | 0.400 (0.400) / 0.233 (0.233) |" in md
    assert "| heal_continuous | I: D1 (2, 2); II: D1+D2 (3, 3) | 5 | one | 1e-05 / 1e-05 |" in md
    assert "| sft_rs | single: D1 (5, 6) | 6 | one | 1e-05 | 0.350 (0.300) |" in md
    assert summary["repairs"]["continuations"] == 4 and summary["repairs"]["derivation_verified"] == 3
    assert "4 continuations: 4 answer-correct, 3 derivation-verified" in md
    for png in ("accuracy", "data", "repairs"):
        assert (run / "report" / f"{png}.png").stat().st_size > 1000
        assert f"report/{png}.png" in md
