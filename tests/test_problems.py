import json

import pytest

from heal.problems import ProblemError, load_file, load_hf_dataset, load_problems


def write(path, text):
    path.write_text(text)
    return path


def test_jsonl_good(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"id": "a", "question": "1+1?", "answer": 2}\n\n{"question": "2+2?", "answer": "4", "level": 3}\n')
    ps = load_file(f)
    assert [p.id for p in ps] == ["a", "p-1"]
    assert ps[0].answer == "2"  # numbers become strings
    assert ps[1].meta == {"level": 3}


def test_jsonl_bad_json_names_file_and_line(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"id": "a", "question": "q", "answer": "1"}\n{"id": "b", "question": \n')
    with pytest.raises(ProblemError, match=r"p\.jsonl:2: not valid JSON"):
        load_file(f)


def test_missing_field_names_line_and_field(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"id": "a", "question": "q", "answer": "1"}\n{"id": "b", "question": "q"}\n')
    with pytest.raises(ProblemError, match=r"p\.jsonl:2: missing field 'answer'"):
        load_file(f)


def test_empty_answer_is_an_error(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"id": "a", "question": "q", "answer": "  "}\n')
    with pytest.raises(ProblemError, match=r"p\.jsonl:1: field 'answer' must be a non-empty string"):
        load_file(f)


def test_skip_mode_counts_and_reports(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"id": "a", "question": "q", "answer": "1"}\n{"id": "b"}\n[1, 2]\n')
    skipped = []
    ps = load_file(f, on_error="skip", skipped=skipped)
    assert [p.id for p in ps] == ["a"]
    assert len(skipped) == 2 and "p.jsonl:2" in skipped[0] and "p.jsonl:3" in skipped[1]


def test_duplicate_ids(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"id": "a", "question": "q", "answer": "1"}\n{"id": "a", "question": "r", "answer": "2"}\n')
    with pytest.raises(ProblemError, match="duplicate problem id 'a'"):
        load_file(f)


def test_json_and_field_mapping(tmp_path):
    f = write(tmp_path / "p.json", json.dumps([{"uid": "x", "problem": "q?", "solution": "7"}]))
    ps = load_file(f, fields={"id": "uid", "question": "problem", "answer": "solution"})
    assert (ps[0].id, ps[0].question, ps[0].answer) == ("x", "q?", "7")


def test_parquet_and_hf_dataset(tmp_path):
    from datasets import Dataset

    ds = Dataset.from_list([{"id": "p0", "question": "q0", "answer": "1"}, {"id": "p1", "question": "q1", "answer": "2"}])
    ds.to_parquet(str(tmp_path / "p.parquet"))
    assert [p.answer for p in load_file(tmp_path / "p.parquet")] == ["1", "2"]
    ds.save_to_disk(str(tmp_path / "hfds"))
    assert [p.id for p in load_hf_dataset(tmp_path / "hfds")] == ["p0", "p1"]
    assert [p.id for p in load_problems(str(tmp_path / "hfds"), size=1)] == ["p0"]


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(ProblemError, match="not found"):
        load_file(tmp_path / "nope.jsonl")
    with pytest.raises(ProblemError, match="unknown problem file type"):
        load_file(write(tmp_path / "p.csv", "a,b\n"))


def test_reasoning_gym_generator_and_suffix_strip():
    ps = load_problems("reasoning_gym:chain_sum", size=3, seed=0,
                       params={"min_terms": 4, "max_terms": 5, "min_digits": 3, "max_digits": 4})
    assert len(ps) == 3 and ps[0].source == "reasoning_gym:chain_sum"
    assert ps[0].meta["task"] == "chain_sum" and ps[0].answer.lstrip("-").isdigit()
    # Deterministic in the seed.
    assert [p.question for p in ps] == [p.question for p in load_problems("reasoning_gym:chain_sum", size=3, seed=0,
                                                                           params={"min_terms": 4, "max_terms": 5, "min_digits": 3, "max_digits": 4})]
    prod = load_problems("reasoning_gym:products", size=2, seed=0, suffixes=["Give only the result as your final answer."])
    assert all("Give only the result" not in p.question for p in prod)
    with pytest.raises(ProblemError, match="reasoning_gym:no_such_task"):
        load_problems("reasoning_gym:no_such_task", size=1)


def test_champ():
    ps = load_problems("champ")
    assert len(ps) == 270
    assert all(p.answer for p in ps) and len({p.id for p in ps}) == 270
    assert len(load_problems("champ", size=5)) == 5


def test_reasoning_gym_answers_that_contradict_their_expression_are_skipped():
    params = {"min_terms": 3, "max_terms": 4, "min_digits": 2, "max_digits": 3, "operators": ["+", "-", "*"],
              "allow_parentheses": False}
    skipped = []
    ps = load_problems("reasoning_gym:basic_arithmetic", size=30, seed=2026, params=params, skipped=skipped)
    assert skipped and len(ps) + len(skipped) == 30
    assert "not the value of its expression" in skipped[0]
    from heal.stepcheck import evaluate

    assert all(evaluate(p.meta["expression"]) == evaluate(p.answer) for p in ps)
