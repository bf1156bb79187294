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
        load_file(write(tmp_path / "p.txt", "a,b\n"))


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


def test_utf8_bom_files_load(tmp_path):
    bom = "\ufeff"
    f = tmp_path / "p.jsonl"
    f.write_text(bom + '{"id": "a", "question": "q", "answer": "1"}\n', encoding="utf-8")
    assert [p.id for p in load_file(f)] == ["a"]
    j = tmp_path / "p.json"
    j.write_text(bom + '[{"id": "b", "question": "q", "answer": "2"}]', encoding="utf-8")
    assert [p.answer for p in load_file(j)] == ["2"]


def test_invalid_utf8_names_file_and_line(tmp_path):
    good = b'{"id": "a", "question": "q", "answer": "1"}\n'
    f = tmp_path / "p.jsonl"
    f.write_bytes(good + b'{"id": "b", "question": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(ProblemError, match=r"p\.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        load_file(f)
    j = tmp_path / "p.json"
    j.write_bytes(b'[\n{"id": "a", "question": "q", "answer": "1"},\n{"id": "b", "question": "\xff", "answer": "2"}\n]')
    with pytest.raises(ProblemError, match=r"p\.json:3: not valid UTF-8"):
        load_file(j)


def test_skip_mode_skips_unreadable_lines(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_bytes(b'{"id": "a", "question": "q", "answer": "1"}\n{"id": "b", \n\xff\n{"id": "c", "question": "q", "answer": "3"}\n')
    skipped = []
    ps = load_file(f, on_error="skip", skipped=skipped)
    assert [p.id for p in ps] == ["a", "c"]
    assert len(skipped) == 2
    assert skipped[0].startswith(f"{f}:2: not valid JSON") and skipped[1].startswith(f"{f}:3: not valid UTF-8")


def test_nan_and_infinite_gold_are_rejected_at_load(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"id": "a", "question": "q", "answer": 1}\n{"id": "b", "question": "q", "answer": NaN}\n')
    with pytest.raises(ProblemError, match=r"p\.jsonl:2: field 'answer' is nan"):
        load_file(f)
    g = write(tmp_path / "g.json", '[{"id": "a", "question": "q", "answer": -Infinity}]')
    with pytest.raises(ProblemError, match=r"g\.json\[0\]: field 'answer' is -inf"):
        load_file(g)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"question": ["q0", "q1"], "answer": [1.5, float("nan")]}), tmp_path / "n.parquet")
    with pytest.raises(ProblemError, match=r"n\.parquet row 1: field 'answer' is nan"):
        load_file(tmp_path / "n.parquet")


def test_file_that_is_not_parquet(tmp_path):
    with pytest.raises(ProblemError, match=r"p\.parquet: not a readable parquet file \(") as e:
        load_file(write(tmp_path / "p.parquet", '{"id": "a", "question": "q", "answer": "1"}\n'))
    assert "\n" not in str(e.value)


def test_directory_that_is_not_a_saved_dataset(tmp_path):
    with pytest.raises(ProblemError, match="a directory, but not a dataset saved with datasets' save_to_disk") as e:
        load_problems(str(tmp_path))
    assert "holds" not in str(e.value)
    write(tmp_path / "train.jsonl", '{"question": "q", "answer": "1"}\n')
    with pytest.raises(ProblemError, match=r"it holds \.jsonl files: name one of them"):
        load_problems(str(tmp_path))


def test_dataset_dict_split_choice(tmp_path):
    from datasets import Dataset, DatasetDict

    def part(prefix):
        return Dataset.from_list([{"id": f"{prefix}0", "question": "q", "answer": "1"}])

    DatasetDict({"test": part("t")}).save_to_disk(str(tmp_path / "one"))
    assert [p.id for p in load_problems(str(tmp_path / "one"))] == ["t0"]  # the only split
    DatasetDict({"test": part("t"), "validation": part("v")}).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(ProblemError, match=r"no 'train' split .*\['test', 'validation'\].*set data\.split"):
        load_problems(str(tmp_path / "two"))
    assert [p.id for p in load_problems(str(tmp_path / "two"), split="validation")] == ["v0"]
    with pytest.raises(ProblemError, match=r"no split 'dev' \(has \['test', 'validation'\]\)"):
        load_problems(str(tmp_path / "two"), split="dev")
    DatasetDict({"train": part("r"), "test": part("t")}).save_to_disk(str(tmp_path / "std"))
    assert [p.id for p in load_problems(str(tmp_path / "std"))] == ["r0"]
    part("s").save_to_disk(str(tmp_path / "single"))
    with pytest.raises(ProblemError, match="a single Dataset without splits, but data.split is 'test'"):
        load_problems(str(tmp_path / "single"), split="test")
    f = write(tmp_path / "p.jsonl", '{"question": "q", "answer": "1"}\n')
    with pytest.raises(ProblemError, match="applies only to a saved DatasetDict folder"):
        load_problems(str(f), split="test")


def test_split_from_config(tmp_path):
    from datasets import Dataset, DatasetDict

    from heal.config import DataConfig
    from heal.problems import from_config

    rows = [{"id": "x", "question": "q", "answer": "1"}]
    DatasetDict({"a": Dataset.from_list(rows), "b": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "d"))
    assert [p.id for p in from_config(DataConfig(source=str(tmp_path / "d"), split="b"))] == ["x"]


def test_openai_evals_records_with_field_paths(tmp_path):
    recs = [
        {"input": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}], "ideal": ["2", "2.0"]},
        {"input": [{"role": "user", "content": "2+2?"}], "ideal": "4"},
    ]
    f = write(tmp_path / "evals.jsonl", "".join(json.dumps(r) + "\n" for r in recs))
    ps = load_file(f, fields={"question": "input[-1].content", "answer": "ideal"})
    assert [(p.id, p.question, p.answer) for p in ps] == [("evals-0", "1+1?", "2"), ("evals-1", "2+2?", "4")]
    assert ps[0].meta == {"other_answers": ["2.0"]} and ps[1].meta == {}  # the rest of a list answer
    first = load_file(f, fields={"question": "input[0].content", "answer": "ideal[-1]"}, on_error="skip", skipped=(skipped := []))
    assert [(p.question, p.answer, p.meta) for p in first] == [("Be brief.", "2.0", {})]
    # An index on a string is an error (not its first character); `ideal` without one takes both forms.
    assert skipped == [f"{f}:2: missing field 'ideal[-1]' (ideal is '4', not a list)"]


def test_field_path_errors_name_the_missing_step(tmp_path):
    f = write(tmp_path / "p.jsonl", json.dumps({"input": [{"role": "user", "text": "q"}], "ideal": []}) + "\n")
    with pytest.raises(ProblemError, match=r"p\.jsonl:1: missing field 'input\[-1\]\.content' \(input\[-1\] is \{"):
        load_file(f, fields={"question": "input[-1].content", "answer": "ideal"})
    with pytest.raises(ProblemError, match=r"p\.jsonl:1: field 'ideal' is an empty list"):
        load_file(f, fields={"question": "input[0].text", "answer": "ideal"})
    with pytest.raises(ProblemError, match=r"field 'input' must be a non-empty string, got \[.*e\.g\. 'input\[-1\]\.content'"):
        load_file(f, fields={"question": "input", "answer": "ideal"})
    with pytest.raises(ProblemError, match=r"unknown key\(s\) \['questoin'\] in data\.fields"):
        load_file(f, fields={"questoin": "input"})


def test_flat_keys_with_dots_still_map(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"q.text": "q?", "a": {"value": 5}}\n')
    ps = load_file(f, fields={"question": "q.text", "answer": "a.value"})
    assert (ps[0].question, ps[0].answer) == ("q?", "5")


def test_data_config_validation():
    from pydantic import ValidationError

    from heal.config import DataConfig

    for bad in ({"limit": -1}, {"limit": 0}, {"fields": {"question": "q", "solution": "s"}},
                {"fields": {"question": "input[x]"}}, {"fields": {"answer": "a..b"}}):
        with pytest.raises(ValidationError):
            DataConfig(**bad)
    assert DataConfig(fields={"question": "input[-1].content", "answer": "ideal[0]"}).fields["answer"] == "ideal[0]"


def test_limit_must_be_positive(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"question": "q", "answer": "1"}\n{"question": "r", "answer": "2"}\n')
    with pytest.raises(ProblemError, match=r"data\.limit must be > 0"):
        load_problems(str(f), limit=-1)
    assert [p.id for p in load_problems(str(f), limit=1)] == ["p-0"]


def test_duplicate_ids_cite_lines(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"id": "a", "question": "q", "answer": "1"}\n\n{"id": "b", "question": "q", "answer": "1"}\n'
                                    '{"id": "a", "question": "r", "answer": "2"}\n')
    with pytest.raises(ProblemError, match=rf"duplicate problem id 'a': {f}:1 and {f}:4$"):
        load_file(f)
