import json

import pytest

from heal.store import JsonlStore, StoreError, atomic_write_text, read_jsonl


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
