"""Benchmark presets (`data.source: <preset>:<file or saved dataset>`): each test writes a small file
in the benchmark's standard layout (the Hub is not reachable) and loads it as heal would; GPQA's
letters go through the real verifier."""

import csv
import json

import pytest

from heal.problems import PRESETS, ProblemError, benchmark_name, load_problems, split_preset
from heal.verify import Verifier, check_gold, choice_letter


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_math500_layout_keeps_its_id_and_columns(tmp_path):
    f = jsonl(tmp_path / "test.jsonl", [
        {"problem": "Convert the point $(0,3)$ to polar coordinates.", "solution": "We have $r = 3$ ...",
         "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2,
         "unique_id": "test/precalculus/807.json"},
        {"problem": "What is $1+1$?", "solution": "2.", "answer": "2", "subject": "Prealgebra", "level": 1}])
    a, b = load_problems(f"math500:{f}")
    assert (a.id, a.answer, a.source) == ("test/precalculus/807.json", "\\left( 3, \\frac{\\pi}{2} \\right)", "math500")
    assert a.question == "Convert the point $(0,3)$ to polar coordinates."  # no suffix: the template asks for \boxed
    assert a.meta == {"solution": "We have $r = 3$ ...", "subject": "Precalculus", "level": 2}
    assert b.id == "math500-1"  # no unique_id: numbered like any file without ids


def test_aime_and_amc_layouts(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # AI-MO/aimo-validation-aime: id, problem, solution, answer, url
    f = jsonl(tmp_path / "aime.jsonl", [{"id": 60, "problem": "Find $x$.", "solution": "...", "answer": "204", "url": "u"}])
    [p] = load_problems(f"aime:{f}")
    assert (p.id, p.question, p.answer, p.meta) == ("60", "Find $x$.", "204", {"solution": "...", "url": "u"})
    # AIME_2024 copies spell the columns with capitals.
    pq.write_table(pa.table({"ID": ["2024-I-1"], "Problem": ["Find $y$."], "Answer": [33]}), tmp_path / "aime24.parquet")
    [p] = load_problems(f"aime:{tmp_path / 'aime24.parquet'}")
    assert (p.id, p.question, p.answer) == ("2024-I-1", "Find $y$.", "33")
    # AI-MO/aimo-validation-amc stores the answer as a float.
    f = jsonl(tmp_path / "amc.jsonl", [{"id": 0, "problem": "How many?", "answer": 142.0, "url": "u"}])
    [p] = load_problems(f"amc:{f}")
    assert (p.answer, p.source) == ("142", "amc")


def test_preset_missing_field_names_line_and_alternatives(tmp_path):
    f = jsonl(tmp_path / "aime.jsonl", [{"id": 1, "problem": "q", "answer": "1"}, {"id": 2, "text": "q", "answer": "2"}])
    with pytest.raises(ProblemError, match=r"aime\.jsonl:2: missing field 'problem' \(the aime preset reads "
                                           r"'problem' or 'Problem' or 'question'\)"):
        load_problems(f"aime:{f}")
    skipped = []
    assert [p.id for p in load_problems(f"aime:{f}", on_error="skip", skipped=skipped)] == ["1"]
    assert len(skipped) == 1
    # A data.fields entry other than its default replaces the preset's paths: row 1 has no `text`.
    [p] = load_problems(f"aime:{f}", fields={"question": "text"}, on_error="skip")
    assert (p.id, p.question) == ("2", "q")


def test_gsm8k_gold_is_after_the_hashes(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = {"question": ["Tom has 3 apples and buys 1,231 more. How many?", "Half of 10?"],
            "answer": ["3 + 1231 = <<3+1231=1234>>1234\n#### 1,234", "10 / 2 = 5\n#### 5"]}
    DatasetDict({"train": Dataset.from_dict(rows), "test": Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "gsm8k"))
    a, b = load_problems(f"gsm8k:{tmp_path / 'gsm8k'}", split="test")
    assert (a.id, a.answer, b.answer) == ("gsm8k-0", "1234", "5")  # "#### 1,234": the separator removed
    assert a.meta["solution"] == rows["answer"][0]  # the worked solution is kept
    bad = jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "5"}])
    with pytest.raises(ProblemError, match=r"g\.jsonl:1: field 'answer' has no '#### <final answer>'"):
        load_problems(f"gsm8k:{bad}")


def write_gpqa(path, rows):
    cols = ["Record ID", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3",
            "Subdomain"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows(rows)
    return path


GPQA_ROWS = [
    ["rec1", "Which particle mediates\nthe electromagnetic force?", "photon ", "gluon", "W boson", "graviton", "Physics"],
    ["rec2", "What is 6 x 7?", "42", "41", "43", "67", "Math"],
    ["rec3", "Which is a noble gas?", "argon", "oxygen", "sodium", "iron", "Chemistry"],
    ["rec4", "Which organelle makes ATP?", "mitochondrion", "ribosome", "nucleus", "vacuole", "Biology"],
]


def test_gpqa_options_shuffled_per_problem_and_letter_gold(tmp_path):
    f = write_gpqa(tmp_path / "gpqa_diamond.csv", GPQA_ROWS)
    ps = load_problems(f"gpqa_diamond:{f}")
    assert [p.id for p in ps] == ["rec1", "rec2", "rec3", "rec4"] and ps[0].source == "gpqa_diamond"
    for p, row in zip(ps, GPQA_ROWS):
        assert p.meta["answer_kind"] == "choice" and p.meta["choices"][p.answer] == row[2].strip()
        assert sorted(p.meta["choices"].values()) == sorted(x.strip() for x in row[2:6])
        assert f"{p.answer}) {row[2].strip()}" in p.question  # the options are in the question, lettered
        assert p.question.startswith(row[1]) and p.question.endswith(PRESETS["gpqa"].suffix)
        assert p.meta["Subdomain"] == row[6] and "Incorrect Answer 1" not in p.meta
    # The order is fixed per problem (a hash of its question), not by row order or data.seed.
    again = {p.id: p for p in load_problems(f"gpqa:{write_gpqa(tmp_path / 'rev.csv', GPQA_ROWS[::-1])}", seed=7)}
    assert all(again[p.id].question == p.question and again[p.id].answer == p.answer for p in ps)
    assert len({p.answer for p in ps}) > 1  # not always "A" (as unshuffled copies of GPQA would be)


def test_gpqa_row_without_an_incorrect_answer_is_named(tmp_path):
    f = tmp_path / "g.csv"
    f.write_text("Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2\nq?,a,b,c\n")
    with pytest.raises(ProblemError, match=r"g\.csv:2: missing field 'Incorrect Answer 3'"):
        load_problems(f"gpqa:{f}")


def test_choice_letter_reads_the_ways_models_write_a_letter():
    for pred, letter in [("B", "B"), ("(B)", "B"), ("B)", "B"), ("B.", "B"), ("B: Paris", "B"), ("C) 42", "C"),
                         ("\\text{D}", "D"), ("\\textbf{(A)}\\ 12", "A"), ("$C$", "C"), ("Option B", "B"),
                         ("The correct option is C", "C"), ("b", "B"), ("(c)", "C")]:
        assert choice_letter(pred) == letter, pred
    for pred in ("42", "A metal compound", "a = b", "I think B"):  # an option's text or prose, not a letter
        assert choice_letter(pred) is None, pred


def test_gpqa_letters_through_the_real_verifier(tmp_path):
    f = write_gpqa(tmp_path / "gpqa.csv", GPQA_ROWS[1:2])
    [p] = [x.to_dict() for x in load_problems(f"gpqa:{f}")]
    gold, meta = p["answer"], p["meta"]
    other = next(c for c in "ABCD" if c != gold)
    with Verifier("math_verify", timeout_s=10) as v:
        assert check_gold([p], verifier=v) == [p]
        for text, ok in [(f"\\boxed{{{gold}}}", True), (f"\\boxed{{\\text{{({gold})}}}}", True),
                         (f"The final answer is {gold}.", True), (f"\\boxed{{{gold}) 42}}", True),
                         (f"\\boxed{{{other}}}", False), ("\\boxed{42}", False),  # the option's text, not its letter
                         ("no answer", False)]:
            assert v.check(text, gold, meta).correct is ok, text
        # Why letters are not left to math-verify: "D) 42" parses as 42 there, "D." not at all.
        assert v.compare("D", "D) 42")[0] is False and v.compare("D", "D) 42", {"answer_kind": "choice"})[0] is True
        bad = dict(p, answer="E")
        with pytest.raises(ProblemError, match=r"not one of its option letters \['A', 'B', 'C', 'D'\]"):
            check_gold([bad], verifier=v)


def test_preset_source_syntax(tmp_path):
    assert split_preset("math500:/data/test.jsonl") == ("math500", "/data/test.jsonl")
    assert split_preset("reasoning_gym:chain_sum") == (None, "reasoning_gym:chain_sum")
    assert split_preset("/data/test.jsonl") == (None, "/data/test.jsonl")
    with pytest.raises(ProblemError, match=r"unknown benchmark preset 'math5'.*presets: aime, amc, gpqa, gpqa_diamond, "
                                           r"gsm8k, math500"):
        load_problems("math5:/data/test.jsonl")
    assert benchmark_name("aime:/x/aime24.jsonl") == "aime" and benchmark_name("/x/held.jsonl") == "held.jsonl"
    assert benchmark_name("reasoning_gym:chain_sum") == "reasoning_gym:chain_sum"


def test_preset_from_config_with_a_saved_dataset(tmp_path):
    from datasets import Dataset

    from heal.config import DataConfig
    from heal.problems import from_config

    Dataset.from_dict({"problem": ["1+1?", "2+2?"], "answer": ["2", "4"], "solution": ["", ""], "subject": ["a", "b"],
                       "level": [1, 2], "unique_id": ["u1", "u2"]}).save_to_disk(str(tmp_path / "m500"))
    ps = from_config(DataConfig(source=f"math500:{tmp_path / 'm500'}", limit=1))
    assert [(p.id, p.answer) for p in ps] == [("u1", "2")]
