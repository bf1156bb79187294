"""The decisive PACE experiment's own logic (experiments/pace_decisive.py): its pre-registered rules
and statistics on hand-computed inputs. The runs themselves are hours of teacher and student time
and are not repeated here."""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def exp():
    spec = importlib.util.spec_from_file_location("pace_decisive", ROOT / "experiments" / "pace_decisive.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def no_real_carried_state(exp, tmp_path, monkeypatch):
    """The committed experiments/runs/pace-decisive-carry holds real students: a test that runs the
    experiment's steps on a tiny run must never read (or write) it."""
    monkeypatch.setattr(exp, "CARRY", tmp_path / "carry")


def test_contrast_exact_sign_flip_and_bootstrap(exp):
    rng = np.random.default_rng(0)
    c = exp.contrast({"a": 1.0, "b": 1.0, "c": 1.0}, {"a": 0.0, "b": 0.0, "c": 0.0, "x": 1.0}, rng)
    assert c["diff"] == 1.0 and c["se"] == 0.0 and c["problems"] == 3
    assert c["p_sign_flip"] == 0.25  # 2 of the 8 sign patterns reach |sum| 3
    assert c["p_bootstrap"] == 0.0  # every resampled mean is 1
    # differences 0.5, 0.5, -0.25, 0: 4 of 8 patterns of the 3 nonzero ones reach |sum| >= 0.75
    c = exp.contrast({"a": 0.5, "b": 0.5, "c": 0.0, "d": 0.25}, {"a": 0.0, "b": 0.0, "c": 0.25, "d": 0.25}, rng)
    assert c["diff"] == pytest.approx(0.1875) and c["p_sign_flip"] == 0.5
    assert c["se"] == pytest.approx(np.std([0.5, 0.5, -0.25, 0], ddof=1) / 2)


def test_per_problem_pools_samples_then_seeds_and_skips_tier_samples(exp):
    def rec(model, pid, j, ok):
        return {"model": model, "problem_id": pid, "sample": j, "correct": ok}

    evals = [rec("sft_rs.matched.s0", "p", 0, True), rec("sft_rs.matched.s0", "p", 1, False),
             rec("sft_rs.matched.s1", "p", 0, True), rec("sft_rs.matched.s1", "p", 1, True),
             rec("sft_rs.matched.s0", "q", 0, True),  # q has no seed-1 records: not paired yet
             rec("teacher", "p", 0, True), rec("teacher", "p", "tier0", False), rec("teacher", "p", "greedy", False),
             rec("teacher", "p", 5, False)]  # beyond n_samples
    pp = exp.per_problem(evals, n_samples=2)
    assert pp["sft_rs.matched"] == {"p": 0.75}  # (0.5 + 1.0) / 2
    assert pp["teacher"] == {"p": 1.0}


def test_describe_averages_maj_and_pass_over_seeds_and_counts_tokens_over_samples(exp):
    def rec(model, pid, j, pred, ok, tokens, truncated=False, verified=False):
        return {"model": model, "problem_id": pid, "sample": j, "pred": pred, "correct": ok, "n_tokens": tokens,
                "truncated": truncated, "derivation_ok": verified}

    evals = [rec("sft_rs.matched.s0", "a@in_dist", 0, "3", True, 10, verified=True),
             rec("sft_rs.matched.s0", "a@in_dist", 1, "4", False, 20, truncated=True),  # tie: the first answer wins
             rec("sft_rs.matched.s1", "a@in_dist", 0, "5", False, 30), rec("sft_rs.matched.s1", "a@in_dist", 1, "5", False, 40),
             rec("sft_rs.matched.s0", "b@ood", 0, "1", True, 5),  # no seed-1 records: left out
             rec("teacher", "a@in_dist", 0, "3", True, 7), rec("teacher", "a@in_dist", "tier0", "9", False, 99)]
    d = exp.describe(evals, 2, {"a@in_dist": "in_dist", "b@ood": "ood"})
    sft = d["sft_rs.matched"]
    assert set(sft) == {"all", "in_dist"} and sft["all"] == sft["in_dist"]
    assert sft["all"] == {"problems": 1, "maj@2": 0.5, "pass@2": 0.5, "mean_tokens": 25.0, "truncation_rate": 0.25,
                          "verified_share_of_correct": 1.0}
    assert d["teacher"]["all"]["mean_tokens"] == 7.0 and d["teacher"]["all"]["maj@2"] == 1.0
    assert d["teacher"]["all"]["pass@2"] is None  # one of its 2 samples so far


def test_analyze_reports_the_primary_with_its_decision_and_holm_over_the_secondary(exp):
    evals = []
    for i in range(40):
        pid = f"t{i}@{'ood' if i % 2 else 'in_dist'}"
        for seed in (0, 1):
            for j in range(2):
                evals.append({"model": f"heal_continuous.matched.s{seed}", "problem_id": pid, "sample": j,
                              "correct": i % 4 != 0, "pred": "1", "n_tokens": 100})
                evals.append({"model": f"sft_rs.matched.s{seed}", "problem_id": pid, "sample": j, "correct": i % 2 == 0,
                              "pred": "1", "n_tokens": 50})
    splits = {f"t{i}@{'ood' if i % 2 else 'in_dist'}" for i in range(40)}
    tiers = {f"t{i}@{'ood' if i % 2 else 'in_dist'}": "corner" if i < 10 else "solved" for i in range(40)}
    out = exp.analyze(evals, 2, {p: exp.split_of(p) for p in splits}, tiers=tiers)
    p = out["primary"]
    assert p["incomplete"] == [] and out["models"]["sft_rs.matched"]["seeds"] == ["s0", "s1"]
    assert p["contrast"] == "heal_continuous.matched - sft_rs.matched" and p["problems"] == 40
    assert p["diff"] == pytest.approx(0.75 - 0.5) and p["decided"] is (p["se"] <= 0.025)
    assert set(p["per_split"]) == {"in_dist", "ood"} and p["per_split"]["ood"]["diff"] == 1.0
    assert all("missing" in c for c in out["secondary"])  # no star/heal/paper runs in these records
    lo, hi = p["ci95"]
    assert lo <= p["diff"] <= hi
    m = out["models"]["sft_rs.matched"]
    assert m["mean"] == 0.5 and m["per_split"]["in_dist"]["mean"] == 1.0 and m["per_split"]["ood"]["mean"] == 0.0
    assert out["tiers"] == {"solved": 30, "corner": 10}
    # corner: t0..t9, sft_rs right on the even ones (5 of 10); heal_continuous wrong on t0, t4, t8
    assert m["per_tier"]["corner"]["mean"] == 0.5 and out["models"]["heal_continuous.matched"]["per_tier"]["corner"]["mean"] == 0.7
    md = exp.analysis_markdown(out)
    assert "solved 30 problems, corner 10 problems" in md and "| sft_rs.matched | 0.500 ± " in md
    assert "| heal_continuous.matched - sft_rs.matched (primary) | 0.250 |" in md
    # each per-split difference carries its paired SE: ood is +1 on every problem, in_dist half -1, half 0
    prim = next(r for r in md.splitlines() if r.startswith("| heal_continuous.matched - sft_rs.matched (primary)"))
    se_in = 0.5 / 19 ** 0.5  # std(ddof=1) of ten -1s and ten 0s is sqrt(5/19), over sqrt(20)
    assert prim.endswith(f"| -0.500 ± {se_in:.3f} | 1.000 ± 0.000 |") and "diff ood ± SE" in md
    assert "not yet: no records of star.matched" in md and "**" not in md
    assert "| sft_rs.matched | ood | 20 | 0.000 | 0.000 | 50 | 0.000 | - |" in md
    assert f"Primary contrast {'decided' if p['decided'] else 'not decided'}" in md
    assert "Holm-adjusted over the secondary contrasts whose records are complete (none yet)." in md
    # one secondary with records: Holm over a single test leaves its p-value as it is
    star = [r | {"model": r["model"].replace("heal_continuous", "star")} for r in evals
            if r["model"].startswith("heal_continuous")]
    out = exp.analyze(evals + star, 2, {p: exp.split_of(p) for p in splits}, tiers=tiers)
    tested = [c for c in out["secondary"] if "missing" not in c]
    assert [c["contrast"] for c in tested] == ["star.matched - sft_rs.matched"]
    assert tested[0]["p_holm"] == tested[0]["p_sign_flip"]
    # each contrast draws its own resamples: star's records, whose contrast comes first, move no other one
    paper_full = [r | {"model": r["model"].replace("sft_rs.matched", "sft_rs.paper")} for r in evals
                  if r["model"].startswith("sft_rs.matched")]
    alone, after_star = (next(c for c in exp.analyze(e, 2, {p: exp.split_of(p) for p in splits}, tiers=tiers)["secondary"]
                              if c["contrast"] == "heal_continuous.matched - sft_rs.paper")
                         for e in (evals + paper_full, evals + star + paper_full))
    for key in ("ci95", "p_bootstrap", "p_sign_flip", "per_split"):
        assert alone[key] == after_star[key]
    assert "(1 of 4)." in exp.analysis_markdown(out)
    # a secondary model with one seed so far: its contrast is described (diff, SE) but not tested, and
    # Holm runs over the complete ones alone
    paper = [r | {"model": r["model"].replace("sft_rs.matched", "sft_rs.paper")} for r in evals
             if r["model"] == "sft_rs.matched.s0"]
    out = exp.analyze(evals + star + paper, 2, {p: exp.split_of(p) for p in splits}, tiers=tiers)
    part = next(c for c in out["secondary"] if c["contrast"] == "heal_continuous.matched - sft_rs.paper")
    assert part["incomplete"] == ["sft_rs.paper"] and part["se"] is not None and "p_holm" not in part
    assert [c["contrast"] for c in out["secondary"] if "p_holm" in c] == ["star.matched - sft_rs.matched"]
    md = exp.analysis_markdown(out)
    row = next(r for r in md.splitlines() if r.startswith("| heal_continuous.matched - sft_rs.paper ("))
    assert row.startswith("| heal_continuous.matched - sft_rs.paper (secondary; incomplete: sft_rs.paper, 40 problems) | ")
    assert row.split(" | ")[4:7] == ["-", "-", "-"]  # no p-values for a contrast not tested
    assert "(1 of 4); 1 more with partial records, marked incomplete: described, not tested." in md


def test_the_primary_decides_only_on_complete_records_of_both_seeds(exp):
    """SE 0 is decided once every problem has all its samples from both seeds of both students; a
    missing sample, a missing seed or a missing problem leaves it undecided, and the report says why."""
    def records(seeds=(0, 1), problems=6, n=2):
        return [{"model": f"{m}.matched.s{seed}", "problem_id": f"t{i}@ood", "sample": j, "correct": m == "heal_continuous",
                 "pred": "1", "n_tokens": 10}
                for m in ("heal_continuous", "sft_rs") for seed in seeds for i in range(problems) for j in range(n)]

    splits = {f"t{i}@ood": "ood" for i in range(6)}
    full = exp.analyze(records(), 2, splits)
    assert full["primary"]["se"] == 0.0 and full["primary"]["decided"] is True
    for partial in (records()[:-1], records(seeds=(0,)), records(problems=5)):
        out = exp.analyze(partial, 2, splits)
        assert out["primary"]["se"] == 0.0 and out["primary"]["decided"] is False
        assert "sft_rs.matched" in out["primary"]["incomplete"] and not out["models"]["sft_rs.matched"]["complete"]
        said = exp.analysis_markdown(out).split("Primary contrast not decided: the records of ")[1].split(" are incomplete")[0]
        assert said == ", ".join(out["primary"]["incomplete"])
    assert exp.analyze(records(seeds=(0,)), 2, splits)["models"]["sft_rs.matched"]["seeds"] == ["s0"]


def test_contrast_plot_writes_a_png(exp, tmp_path):
    evals = [{"model": f"{m}.matched.s{seed}", "problem_id": f"t{i}@{s}", "sample": 0, "correct": (i + len(m)) % 3 == 0,
              "pred": str(i), "n_tokens": 10}
             for m in ("heal_continuous", "sft_rs", "star") for seed in (0, 1) for i in range(12) for s in ("ood", "harder")]
    splits = {f"t{i}@{s}": s for i in range(12) for s in ("ood", "harder")}
    out = exp.analyze(evals, 1, splits)
    exp.contrast_plot(out, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_test_set_blocks_never_share_a_reasoning_gym_seed(exp):
    """reasoning-gym derives item i from seed + i: each block's seed range is disjoint from the others
    of the same task, from training (2026 + i) and from the OOD pilot. (Training's two chain_sum bands
    share seeds 2026..2145 under different term and digit counts: committed data, left as it is.)"""
    ranges = [(task, range(seed, seed + size)) for _, task, _, size, seed in exp.TEST_BLOCKS]
    ranges += [(task, range(exp.SEED, exp.SEED + 120)) for task, _, _ in exp.TRAIN_BANDS]
    for i, (task, r) in enumerate(ranges):
        for task2, r2 in ranges[i + 1:]:
            if task == task2 and (task, r) != (task2, r2):
                assert not set(r) & set(r2), (task, r, r2)
    ood = range(exp.OOD_SEED, exp.OOD_SEED + 100)
    assert not set(ood) & set(range(exp.PILOT_SEED, exp.PILOT_SEED + 40))
    assert exp.split_of("chain_sum-s920001-3@harder") == "harder"
    assert exp.ood_family({"gsm_symbolic": 0.1, "simple_equations": 0.5, "decimal_arithmetic": 0.3}) == "simple_equations"


def test_plan_steps_count_as_heal_does(exp):
    # D1 20, D2 4, D3 4 at batch 8: stages of 3, 3, 4 batches at 5 epochs -> 15 + 15 + 20 = 50
    s = exp.plan_steps({"D1": 20, "D2": 4, "D3": 4}, batch=8)
    assert s == {"heal_curriculum": 50, "paper_sft_rs": 15, "per_seed": 5 * 50 + 15}
    # ... and as heal's own stage plan does (heal_continuous's steps, sft_rs matched to them)
    from heal.pace import stage_plan

    sizes = {"D1": 20, "D2": 4, "D3": 4}
    cfg = exp.config()  # the experiment's yaml: batch 8, 5 epochs a stage
    assert cfg.train.batch_size == 8
    assert sum(st["max_steps"] for st in stage_plan("heal_continuous", sizes, cfg)) == 50
    assert stage_plan("sft_rs", sizes, cfg)[0]["max_steps"] == 50


@pytest.mark.slow
def test_student_pilot_then_primary_runs_on_a_tiny_teacher_run(exp, tmp_path, tiny_model_dir, monkeypatch):
    """The unattended chain (`all`) past the teacher: the student pilot times full fine-tuning and
    LoRA and writes its choice; the primary runs then train per seed in run directories that link
    the teacher's records (read only) and find each other's weights by name."""
    from helpers import write_tiny_run

    cfg_path = write_tiny_run(tmp_path, tiny_model_dir, train={"methods": ["sft_rs"]})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(exp, "ROOT", tmp_path)
    monkeypatch.setattr(exp, "CONFIG", cfg_path)
    monkeypatch.setattr(exp, "STUDENTS", tmp_path / "students")
    monkeypatch.setattr(exp, "PILOT_STEPS", 3)
    monkeypatch.setattr(exp, "LORA", {"r": 4, "alpha": 8, "target_modules": "all-linear", "merge": True})
    exp.step_student_pilot()
    pilot = json.loads((tmp_path / "students" / "pilot.json").read_text())
    assert pilot["full"]["steps"] == pilot["lora"]["steps"] == 3 and pilot["choice"] in ("full", "lora")
    assert pilot["projected_hours"] > 0 and pilot["full"]["plan_steps_at_5_epochs"]["per_seed"] > 0
    assert pilot["epochs"] in (1, 2, 3, 4, 5) and pilot["full"]["timed_steps"] == 3
    assert (pilot["lora"]["batch_size"], pilot["lora"]["grad_accum"]) == (4, 2)
    stage = tmp_path / "students" / "pilot-lora" / "checkpoints" / "sft_rs" / "stage-single"
    assert (stage / "heal_stage.json").exists() and not list(stage.glob("*.safetensors"))  # weights pruned
    exp.step_train(exp.RUNS[:1])
    models = exp.student_models()
    assert set(models) == {f"{m}.matched.s{s}" for m in ("sft_rs", "heal_continuous") for s in (0, 1)}
    run = tmp_path / "students" / "matched-s0"
    cfg = exp.student_config("matched", 0)  # the pilot's schedule reaches every run
    assert cfg.train.stages["I"].epochs == pilot["epochs"] and (cfg.train.lora is not None) == (pilot["choice"] == "lora")
    assert (run / "samples.jsonl").is_symlink() and not (tmp_path / "run" / "checkpoints").exists()


def test_choose_schedule_prefers_full_then_the_most_lora_epochs_that_fit(exp):
    sizes = {"D1": 240, "D2": 40, "D3": 40}  # 30, 35, 40 batches of 8: H = 525 steps at 5 epochs
    per_seed = exp.plan_steps(sizes, 8)["per_seed"]
    fits = exp.TRAIN_HOURS * 3600 / (per_seed * len(exp.SEEDS))  # seconds per step that just fit at 5 epochs
    assert exp.choose_schedule({"full": fits * 0.9, "lora": 1.0}, sizes, {"full": 8, "lora": 8})["choice"] == "full"
    c = exp.choose_schedule({"full": fits * 2, "lora": fits * 0.9}, sizes, {"full": 8, "lora": 8})
    assert (c["choice"], c["epochs"]) == ("lora", 5)
    c = exp.choose_schedule({"full": fits * 9, "lora": fits * 2.2}, sizes, {"full": 8, "lora": 8})  # 2 epochs: 0.4 of the steps
    assert (c["choice"], c["epochs"]) == ("lora", 2) and c["projected_hours"] < exp.TRAIN_HOURS
    assert exp.choose_schedule({"full": fits * 90, "lora": fits * 50}, sizes, {"full": 8, "lora": 8})["epochs"] == 1
    # each variant's steps at its own examples per step: LoRA in steps of 16 takes half the steps
    assert exp.choose_schedule({"full": fits * 2, "lora": fits * 1.8}, sizes, {"full": 8, "lora": 16})["epochs"] == 5
    lora = exp.schedule("lora", 2)
    assert lora["train.stages.III.epochs"] == lora["train.single.epochs"] == 2
    assert lora["train.single.learning_rate"] == exp.LORA_LR and lora["train.gradient_checkpointing"] is False
    assert lora["train.batch_size"] * lora["train.grad_accum"] == 8  # the plan's batch, in two micro-batches
    assert exp.schedule("full")["train.lora"] is None


def test_a_full_disk_or_ctrl_c_ends_the_run_with_one_line(exp, monkeypatch):
    import errno

    monkeypatch.chdir(Path.cwd())  # main() moves to the repository root; put the test's cwd back after

    def full():
        raise OSError(errno.ENOSPC, "No space left on device", "experiments/runs/x/samples.jsonl")

    monkeypatch.setitem(exp.STEPS, "stage0", full)
    with pytest.raises(SystemExit, match=r"^no space left on the device \(experiments/runs/x/samples.jsonl\): free "
                                         r"some space .* rerun `python experiments/pace_decisive.py stage0`"):
        exp.main(["stage0"])

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setitem(exp.STEPS, "train", interrupted)
    with pytest.raises(SystemExit, match=r"^interrupted; the records so far are kept: rerun `python "
                                         r"experiments/pace_decisive.py train`"):
        exp.main(["train"])
    import os
    import signal

    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `nohup ... &` starts the run
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):  # kill -INT, or plain `kill`
            monkeypatch.setitem(exp.STEPS, "eval", lambda: os.kill(os.getpid(), sig))
            with pytest.raises(SystemExit, match=r"^interrupted; .* rerun `python experiments/pace_decisive.py eval`"):
                exp.main(["eval"])
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # the caller's handlers are back
    finally:
        signal.signal(signal.SIGINT, ignored)
    with pytest.raises(SystemExit, match="^usage: "):
        exp.main(["nonsense"])


def test_step_analyze_reads_only_current_weights_records_and_tiers_from_tier_samples(exp, tmp_path, monkeypatch):
    """step_analyze on a hand-made eval store: a retrained student's old records (another tag) are
    left out, and the tiers come from the teacher's tier samples, not from the samples that score it."""
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(f"output_dir: {run}\nsample: {{k: 4}}\neval: {{n_samples: 2, tier_samples: 2, greedy: false}}\n")
    weights = {}
    for name in ("heal_continuous.matched.s0", "sft_rs.matched.s0"):
        weights[name] = tmp_path / name
        weights[name].mkdir()
        (weights[name] / "heal_stage.json").write_text(json.dumps({"fingerprint": f"fp-{name[:3]}"}))
    pids = [f"q{i}@{'harder' if i % 2 else 'in_dist'}" for i in range(6)]
    rows = []
    for i, pid in enumerate(pids):
        for j in range(2):
            rows.append({"model": "teacher", "tag": "teacher", "problem_id": pid, "sample": j, "correct": False})
            rows.append({"model": "teacher", "tag": "teacher", "problem_id": pid, "sample": f"tier{j}",
                         "correct": i < 3})  # q0-q2 solved by the tier samples, q3-q5 corner
            rows.append({"model": "sft_rs.matched.s0", "tag": "fp-sft", "problem_id": pid, "sample": j, "correct": False})
            rows.append({"model": "heal_continuous.matched.s0", "tag": "fp-hea", "problem_id": pid, "sample": j,
                         "correct": True})
            rows.append({"model": "heal_continuous.matched.s0", "tag": "old", "problem_id": pid, "sample": j,
                         "correct": False})  # records of weights retrained since
    for r in rows:  # fields every eval record has
        r |= {"key": f"{r['model']}@{r['tag']}/{r['problem_id']}/{r['sample']}", "pred": None, "n_tokens": 10,
              "truncated": False}
    rows.append(rows[-2] | {"correct": False})  # a duplicated key: the first copy counts, as in the store
    # the last line still being written by an evaluation that runs meanwhile
    (run / "eval" / "evals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"key": "sft_rs.ma')
    (run / "eval" / "problems.jsonl").write_text("".join(json.dumps({"id": p}) + "\n" for p in pids))
    monkeypatch.setattr(exp, "CONFIG", cfg_path)
    monkeypatch.setattr(exp, "ROOT", tmp_path)
    monkeypatch.setattr(exp, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(exp, "student_models", lambda: {k: str(v) for k, v in weights.items()})
    (tmp_path / "results").mkdir()
    exp.step_analyze()
    out = json.loads((tmp_path / "results" / "analysis.json").read_text())
    assert out["tiers"] == {"solved": 3, "corner": 3}
    assert out["models"]["heal_continuous.matched"]["mean"] == 1.0  # the "old" records left out
    assert out["models"]["teacher"]["per_tier"]["solved"]["mean"] == 0.0  # scored samples, not the tier ones
    assert out["primary"]["diff"] == 1.0 and out["primary"]["problems"] == 6
    assert (tmp_path / "results" / "contrasts.png").stat().st_size > 0


def test_students_move_to_a_new_machine_through_the_carried_state(exp, tmp_path, tiny_model_dir, monkeypatch, capsys):
    """`carry` keeps megabytes of each LoRA student run (finished stages' records, adapters and
    optimizer state; the newest mid-stage checkpoint); on a machine without the run folders `train`
    puts them back, rebuilds the merged weights it needs, resumes the cut stage where it stopped and
    trains nothing finished again."""
    from transformers import AutoModelForCausalLM, Trainer

    import torch
    from helpers import write_tiny_run

    from heal.pace import ensure_weights

    cfg_path = write_tiny_run(tmp_path, tiny_model_dir, train={"methods": ["sft_rs"], "save_steps": 1})
    monkeypatch.chdir(tmp_path)
    for name, value in {"ROOT": tmp_path, "CONFIG": cfg_path, "STUDENTS": tmp_path / "students",
                        "CARRY": tmp_path / "carry", "SEEDS": (0,),
                        "LORA": {"r": 4, "alpha": 8, "target_modules": "all-linear", "merge": True}}.items():
        monkeypatch.setattr(exp, name, value)
    (tmp_path / "students").mkdir()
    (tmp_path / "students" / "pilot.json").write_text(json.dumps({"choice": "lora", "epochs": 1}))
    save, saves = Trainer._save_checkpoint, []

    def save_then_stop(self, *a, **k):  # the session ends in heal_continuous's stage II, after its first checkpoint
        save(self, *a, **k)
        saves.append(self.args.output_dir)
        if self.args.output_dir.endswith("heal_continuous/stage-II.partial"):
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        exp.step_train([("matched", ["sft_rs", "heal_continuous"])])
    monkeypatch.setattr(Trainer, "_save_checkpoint", save)
    exp.step_carry()
    carried = {str(p.relative_to(tmp_path / "carry")) for p in (tmp_path / "carry").rglob("*") if p.is_file()}
    ckpt = "matched-s0/checkpoints/"
    assert {ckpt + "sft_rs/stage-single/adapter/adapter_model.safetensors",
            ckpt + "heal_continuous/stage-I/optimizer.pt", ckpt + "heal_continuous/stage-II.partial/heal_fingerprint",
            ckpt + "heal_continuous/stage-II.partial/checkpoint-1/optimizer.pt"} <= carried
    assert not any(p.endswith("model.safetensors") and "adapter" not in p for p in carried)  # no merged weights
    assert not any(p.endswith("tokenizer.json") for p in carried)
    assert {ckpt + "heal_continuous/stage-II.partial/checkpoint-1/" + f for f in exp.CHECKPOINT_FILES} <= carried
    assert "matched-s0/checkpoints/final.json" in carried  # sft_rs finished

    run = tmp_path / "students" / "matched-s0"
    sft_rs = AutoModelForCausalLM.from_pretrained(run / "checkpoints" / "sft_rs" / "stage-single",
                                                  dtype=torch.float32).state_dict()
    shutil.rmtree(run)  # a new machine: only the committed carry is left
    capsys.readouterr()
    exp.step_train([("matched", ["sft_rs", "heal_continuous"])])
    said = capsys.readouterr().out.splitlines()
    assert "resuming stage-II from checkpoint-1" in said
    assert [m.split(" (")[0].rsplit("/", 2)[-2:] for m in said if m.startswith("trained ")] == [
        ["heal_continuous", "stage-II"], ["heal_continuous", "stage-III"]]
    models = exp.student_models()  # final.json came along: eval finds both students
    assert set(models) == {"sft_rs.matched.s0", "heal_continuous.matched.s0"}
    ensure_weights(Path(models["sft_rs.matched.s0"]), tiny_model_dir, log=said.append)  # what eval does first
    assert said[-1] == "sft_rs stage-single: merged weights rebuilt from its LoRA adapter"
    rebuilt = AutoModelForCausalLM.from_pretrained(run / "checkpoints" / "sft_rs" / "stage-single",
                                                   dtype=torch.float32).state_dict()
    assert all(torch.allclose(sft_rs[k], rebuilt[k], atol=1e-6) for k in sft_rs)
    exp.step_carry()  # the finished stage replaces the mid-stage checkpoint
    carried = {str(p.relative_to(tmp_path / "carry")) for p in (tmp_path / "carry").rglob("*") if p.is_file()}
    assert not any(".partial" in p for p in carried) and ckpt + "heal_continuous/stage-III/DONE" in carried


def test_the_carried_state_is_not_ignored_by_git(exp, monkeypatch):
    """The student runs' checkpoints are ignored (gigabytes); the carried state under them is committed."""
    import subprocess

    monkeypatch.undo()  # the real CARRY path (only git looks at it; nothing is read or written)
    rel = exp.CARRY.relative_to(ROOT) / "matched-s0" / "checkpoints" / "sft_rs"
    carried = [rel / "stage-single" / "DONE", rel / "stage-single.partial" / "checkpoint-10" / "optimizer.pt"]
    ignored = [exp.STUDENTS.relative_to(ROOT) / "matched-s0" / "checkpoints" / "sft_rs" / "stage-single" / "DONE"]
    check = subprocess.run(["git", "check-ignore", "--no-index", *map(str, carried + ignored)], cwd=ROOT,
                           capture_output=True, text=True)
    assert check.stdout.split() == [str(p) for p in ignored]


def test_carry_moves_only_forward_within_a_fingerprint(exp, tmp_path, monkeypatch):
    """A stage's state of another fingerprint (other data or settings) is never taken for newer or older
    progress: the machine training the stage now carries its own checkpoint over a stale finished stage
    or a further checkpoint of the old fingerprint, and a restore leaves a machine's own progress be."""
    monkeypatch.setattr(exp, "STUDENTS", tmp_path / "students")
    monkeypatch.setattr(exp, "CARRY", tmp_path / "carry")
    monkeypatch.setattr(exp, "ROOT", tmp_path)
    unit = "matched-s0/checkpoints/sft_rs/stage-single"

    def partial(root: Path, marker: str, step: int) -> Path:
        shutil.rmtree(root / (unit + ".partial"), ignore_errors=True)
        ckpt = root / (unit + ".partial") / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt.parent / "heal_fingerprint").write_text(marker)
        for f in exp.CHECKPOINT_FILES[1:] + ("adapter_model.safetensors",):
            (ckpt / f).write_bytes(marker.encode())
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        return ckpt.parent

    done = tmp_path / "carry" / unit  # finished elsewhere, under settings since changed
    (done / "adapter").mkdir(parents=True)
    (done / "DONE").write_text("ok\n")
    (done / "heal_stage.json").write_text(json.dumps({"fingerprint": "F1"}))
    partial(tmp_path / "students", "F2", 5)
    exp.step_carry()
    assert not done.exists() and exp.fingerprint(tmp_path / "carry" / (unit + ".partial")) == "F2"
    partial(tmp_path / "carry", "F1", 50)  # an old fingerprint's further checkpoint
    exp.step_carry()
    assert exp.newest_checkpoint(tmp_path / "carry" / (unit + ".partial")).name == "checkpoint-5"
    partial(tmp_path / "carry", "F2", 9)  # the same fingerprint, further: kept
    exp.step_carry()
    assert exp.newest_checkpoint(tmp_path / "carry" / (unit + ".partial")).name == "checkpoint-9"
    partial(tmp_path / "students", "F3", 2)  # restore keeps this machine's own progress
    exp.restore_carried(tmp_path / "students" / "matched-s0")
    assert exp.fingerprint(tmp_path / "students" / (unit + ".partial")) == "F3"
    shutil.rmtree(tmp_path / "students" / (unit + ".partial"))  # a new machine takes the carried one
    exp.restore_carried(tmp_path / "students" / "matched-s0")
    assert exp.newest_checkpoint(tmp_path / "students" / (unit + ".partial")).name == "checkpoint-9"
    carried = tmp_path / "carry" / (unit + ".partial")  # a carry cut between its two renames
    os.replace(carried, carried.with_name(".replaced-" + carried.name))
    exp.recover_units(tmp_path / "carry")
    assert exp.newest_checkpoint(carried).name == "checkpoint-9"
