import json

import pytest

from heal.store import JsonlStore, StoreError, atomic_write_text, read_jsonl, read_store


def test_append_dedup_and_resume(tmp_path):
    s = JsonlStore(tmp_path / "s.jsonl")
    assert s.append([{"key": "a", "v": 1}, {"key": "b", "v": 2}, {"key": "a", "v": 3}]) == 2
    assert s.append([{"key": "b", "v": 9}]) == 0
    s2 = JsonlStore(tmp_path / "s.jsonl")  # a new process resuming
    assert s2.done() == {"a", "b"} and [r["v"] for r in s2] == [1, 2]


def test_partial_last_line_is_dropped(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps({"key": "a"}) + "\n" + '{"key": "b", "te')  # killed mid-write
    s = JsonlStore(p)
    assert s.done() == {"a"}
    s.append([{"key": "b"}])
    assert [r["key"] for r in read_jsonl(p)] == ["a", "b"]


def test_a_reader_skips_the_record_a_writer_is_still_writing_and_changes_nothing(tmp_path):
    """A store read while another process appends to it (an analysis during an evaluation): the
    unfinished last line is not a record yet, and only its writer may drop it."""
    p = tmp_path / "s.jsonl"
    text = json.dumps({"key": "a"}) + "\n" + json.dumps({"key": "a", "v": 2}) + "\n" + '{"key": "b", "te'
    p.write_text(text)
    assert list(read_store(p)) == [{"key": "a"}]
    assert p.read_text() == text
    with pytest.raises(StoreError, match=r"s\.jsonl:3: not valid JSON"):  # not a store: a broken file
        list(read_jsonl(p))
    p.write_text('{"key": "a"}\nnot json\n{"key": "c"}')  # a finished line that is broken is still named
    with pytest.raises(StoreError, match=r"s\.jsonl:2: not valid JSON"):
        list(read_store(p))


def test_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"key": "a"}\nnot json\n{"key": "c"}\n')
    with pytest.raises(StoreError, match=r"s\.jsonl:2: not valid JSON"):
        JsonlStore(p)


def test_record_without_key(tmp_path):
    with pytest.raises(StoreError):
        JsonlStore(tmp_path / "s.jsonl").append([{"v": 1}])


def test_atomic_write_replaces_whole(tmp_path):
    p = tmp_path / "x" / "t.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two" and [f.name for f in p.parent.iterdir()] == ["t.txt"]


def test_per_token_floats_are_stored_as_float16_and_read_back_as_lists(tmp_path):
    import math

    from heal.store import JsonlStore, pack_f16, read_jsonl

    values = [0.0, 0.12345, 2.5, 11.9, -0.0003, -23.75, -math.inf]
    store = JsonlStore(tmp_path / "s.jsonl")
    store.append([{"key": "a", "entropy": pack_f16(values), "logprobs": None},
                  {"key": "b", "entropy": [0.1, 0.2]}])  # a record written before packing: unchanged
    a, b = list(JsonlStore(tmp_path / "s.jsonl"))
    assert b["entropy"] == [0.1, 0.2] and a["logprobs"] is None
    assert len(a["entropy"]) == len(values) and a["entropy"][-1] == -math.inf
    for got, want in zip(a["entropy"][:-1], values[:-1]):
        assert abs(got - want) <= 1e-3 * max(1.0, abs(want))
    assert list(read_jsonl(tmp_path / "s.jsonl"))[0]["entropy"] == a["entropy"]
    line = (tmp_path / "s.jsonl").read_text().splitlines()[0]
    assert len(pack_f16([0.5] * 3000)["f16"]) == 8000  # 2 bytes a token: 6,000 bytes, 8,000 in base64
    assert '"f16"' in line
