"""`heal view`: the HTML generation (no browser), then the pages in a real headless chromium.

Browser tests need Debian's chromium (/usr/bin/chromium) and websocket-client; without them they
skip, unless HEAL_REQUIRE_BROWSER=1 (CI), where a missing browser is a failure.
"""

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pytest

from heal.entropy import token_pieces
from heal.store import atomic_write_jsonl
from heal.view import collect, render_report, render_view, text_steps, token_pieces_linear, write_view

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "experiments" / "runs"
REPAIRED = "basic_arithmetic-s2026-43"  # a corner problem of the committed runs, repaired with a false step


def _bench():
    spec = importlib.util.spec_from_file_location("view_load", ROOT / "benchmarks" / "view_load.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["view_load"] = mod
    spec.loader.exec_module(mod)
    return mod


vl = _bench()


def _islands(page: str) -> dict:
    return {m.group(1): json.loads(m.group(2)) for m in
            re.finditer(r'<script type="application/json" id="([^"]+)">(.*?)</script>', page, re.S)}


# ---------------------------------------------------------------- generation (no browser)

@pytest.mark.parametrize("text", ["", "a", "a\n\nb", "\n\na\n\n\n\nb\n\n", "x\n \ny\n\n  \n\nz", "one\n\n\n",
                                  "a\n\nb\n\n   ", "\n\n\n", "é\n\nü\n\nend"])
def test_text_steps_is_the_step_rule_on_characters(text):
    from test_entropy import _old_step_spans  # the step rule as first written (text kept, quadratic)

    assert text_steps(text) == [tuple(s) for s in _old_step_spans(list(text))]


class ByteTokenizer:
    """Token = one UTF-8 byte; decoding a cut multi-byte character gives U+FFFD, as HF tokenizers do."""

    def decode(self, ids, skip_special_tokens=False):
        return bytes(ids).decode("utf-8", errors="replace")


def test_token_pieces_linear_matches_incremental_decoding():
    ids = list("Ünïcödé → 数学 😀 step\n\nnext".encode())
    tok = ByteTokenizer()
    from test_entropy import _prefix_pieces  # the definition: decode every prefix

    assert token_pieces_linear(tok, ids) == _prefix_pieces(tok, ids)
    assert "".join(token_pieces_linear(tok, ids)) == bytes(ids).decode()


def _tiny_run(tmp_path, n=12, long_tokens=600):
    return vl.write_synthetic_run(tmp_path / "run", n_problems=n, long_tokens=long_tokens)


def test_view_has_every_problem_and_its_repairs(tmp_path):
    run = _tiny_run(tmp_path)
    data = collect(run)
    assert len(data["rows"]) == 12 and data["notes"]["errors"] == []
    assert [m[0] for m in data["notes"]["missing"]] == ["data", "eval/evals.jsonl"]
    page = render_view(data)
    isl = _islands(page)
    long = isl[isl["ids"][vl.LONG_ID]]
    src = long["sources"][0]
    assert src["cut"] > 0 and src["hint_text"].strip().startswith("Hint")
    assert src["text"] and src["cut_char"] == src["csteps"][src["bp"]["kept_steps"] - 1][1] and not src["approx"]
    c0 = src["conts"][0]
    assert c0["false_where"] == "continuation" and c0["false_step"] == 0 and c0["pure"]["accepted"] is True
    row = next(r for r in isl["rows"] if r["id"] == vl.LONG_ID)
    assert row["rep"] == [2, 2, 1] and "repair:verified" in row["tags"] and "tier:corner" in row["tags"]


def test_view_with_a_tokenizer_has_per_token_text(tmp_path):
    run = _tiny_run(tmp_path, n=3)
    isl = _islands(render_view(collect(run, vl.CharTokenizer(), "chars")))
    src = isl[isl["ids"][vl.LONG_ID]]["sources"][0]
    sample = next(json.loads(line) for line in (run / "samples.jsonl").open() if f'"{vl.LONG_ID}/0"' in line)
    assert "".join(src["pieces"]) == sample["text"] and len(src["ent"]) == len(src["pieces"])


def test_tokenizer_auto_is_the_prepared_teacher(tmp_path, smollm2):
    from transformers import AutoTokenizer

    run = _tiny_run(tmp_path, n=3)
    tok = AutoTokenizer.from_pretrained(smollm2.hf)
    rows = [json.loads(line) for line in (run / "samples.jsonl").open()]
    for r in rows:
        r["token_ids"] = tok(r["text"] + " → ∑ é", add_special_tokens=False)["input_ids"]
        r["text"] += " → ∑ é"
    atomic_write_jsonl(run / "samples.jsonl", rows)
    (run / "config.yaml").write_text("teacher:\n  model: smollm2-135m\n")
    view, _ = write_view(run)  # --tokenizer auto
    isl = _islands(view.read_text())
    assert "smollm2-135m" in isl["meta"]["notes"]["tokenizer"]
    src = isl[isl["ids"][vl.LONG_ID]]["sources"][0]
    n = src["n"]
    assert src["pieces"] == token_pieces(tok, rows[0]["token_ids"][:n])
    isl = _islands(render_view(collect(run, vl.CharTokenizer(), "the wrong tokenizer")))
    src = isl[isl["ids"][vl.LONG_ID]]["sources"][0]
    assert src["pieces"] is None and src["tokenizer_mismatch"] and src["text"] == rows[0]["text"]
    (run / "config.yaml").write_text("teacher:\n  model: not-a-prepared-model\n")
    assert "not prepared here" in _islands(write_view(run)[0].read_text())["meta"]["notes"]["tokenizer"]


def test_record_text_cannot_close_the_script(tmp_path):
    run = _tiny_run(tmp_path, n=3)
    rows = [json.loads(line) for line in (run / "repairs.jsonl").open()]
    rows[0]["continuation"] = "</script><script>alert(1)</script><!-- x"
    atomic_write_jsonl(run / "repairs.jsonl", rows)
    page = render_view(collect(run))
    assert page.count("<script") == page.count("</script>") == len(_islands(page)) + 1
    isl = _islands(page)
    assert isl[isl["ids"][vl.LONG_ID]]["sources"][0]["conts"][0]["text"].startswith("</script>")


def test_missing_stages_are_named_and_the_page_still_renders(tmp_path):
    run = _tiny_run(tmp_path, n=3)
    for name in ("repairs.jsonl", "scored.jsonl", "guided.jsonl"):
        (run / name).unlink()
    data = collect(run)
    assert {"repairs.jsonl", "scored.jsonl", "guided.jsonl"} <= {m[0] for m in data["notes"]["missing"]}
    assert len(data["rows"]) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    paths = write_view(empty, tokenizer="none")
    assert "problems.jsonl" in paths[0].read_text() and paths[1].exists()


def test_a_malformed_record_is_named_by_file_and_line(tmp_path):
    run = _tiny_run(tmp_path, n=6)
    lines = (run / "repairs.jsonl").read_text().splitlines()
    lines[2] = lines[2][:40]  # a cut line in the middle of the file
    (run / "repairs.jsonl").write_text("\n".join(lines) + "\n")
    (run / "tiers.jsonl").write_text((run / "tiers.jsonl").read_text() + "[1, 2]\n")
    data = collect(run)
    errors = " ".join(data["notes"]["errors"])
    assert f"{run / 'repairs.jsonl'}:3: not valid JSON" in errors
    assert "tiers.jsonl:7: expected a JSON object" in errors
    assert len(data["rows"]) == 6  # what is readable still shows


def test_a_record_missing_a_field_is_named_not_fatal(tmp_path):
    run = _tiny_run(tmp_path, n=3)
    rows = [json.loads(line) for line in (run / "repairs.jsonl").open()]
    del rows[0]["source_key"], rows[1]["source_key"]
    rows[0]["key"] = 7  # wrong type
    atomic_write_jsonl(run / "repairs.jsonl", rows)
    data = collect(run)
    assert any(vl.LONG_ID in e for e in data["notes"]["errors"]) and len(data["rows"]) == 2


def test_cli_prints_the_paths(tmp_path):
    from typer.testing import CliRunner

    from heal.cli import app

    run = _tiny_run(tmp_path, n=3)
    res = CliRunner().invoke(app, ["view", str(run), "--tokenizer", "none"])
    assert res.exit_code == 0, res.output
    assert res.output.split() == [str(run / "view.html"), str(run / "report.html")]
    res = CliRunner().invoke(app, ["view", str(tmp_path / "nope")])
    assert res.exit_code == 1


@pytest.mark.parametrize("name", ["gear-probe", "gear-probe/gear/first_third_steps-b0", "pace-qwen0.5b", "pace-smollm2"])
def test_committed_runs_render(tmp_path, name):
    view, report = write_view(RUNS / name, tmp_path / "view.html", tokenizer="none")
    isl = _islands(view.read_text())
    assert isl["meta"]["notes"]["errors"] == [] and len(isl["rows"]) == 120
    missing = {m[0] for m in isl["meta"]["notes"]["missing"]}
    if name == "gear-probe":  # the probe keeps its GEAR runs one level down: named on the page
        assert "repairs.jsonl" in missing and "gear/first_third_steps-b0" in isl["meta"]["notes"]["subruns"]
    else:
        assert "repairs.jsonl" not in missing
        assert sum(r["rep"][0] for r in isl["rows"]) > 0
    rep = report.read_text()
    assert "<svg" in rep or name.startswith("gear-probe")
    if name.startswith("pace"):
        md_tables = (RUNS / name / "report.md").read_text().count("\n|---")
        assert rep.count("<table class=report>") == md_tables
        assert "view.html#q=set:D2" in rep and "view.html#eval=heal" in rep and "view.html#q=tier:corner" in rep
        assert len(isl["evals"]["records"]) > 0


def test_report_links_every_count(tmp_path):
    page = render_report(RUNS / "pace-qwen0.5b")
    for table in re.findall(r"<table class=report>.*?</table>", page, re.S):
        head = re.findall(r"<th>(.*?)</th>", table)
        if head[1].startswith("stages"):
            continue  # training: optimizer steps and losses, not records
        for row in re.findall(r"<tr>(.*?)</tr>", table, re.S):
            if row.startswith("<td>before the per-problem cap"):
                continue  # sizes of sets that are not kept: no records to link
            for cell in re.findall(r"<td>(.*?)</td>", row)[1:]:
                assert cell == "-" or cell.startswith("<a href='view.html#"), (head, row)


# ---------------------------------------------------------------- in headless chromium

@pytest.fixture(scope="module")
def browser():
    why = None
    if not vl.chromium_available():
        why = f"{vl.CHROMIUM} is missing (apt-get install -y chromium)"
    else:
        try:
            import websocket  # noqa: F401
        except ImportError:
            why = "websocket-client is not installed"
    if why:
        if os.environ.get("HEAL_REQUIRE_BROWSER") == "1":
            pytest.fail(f"HEAL_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    with vl.chromium(1400, 1000) as page:
        yield page


def _open(page, path: Path, frag: str = ""):
    page.errors.clear()
    page.open(path.resolve().as_uri() + frag)


def _not_blank(png: Path) -> float:
    import numpy as np
    from PIL import Image

    px = np.asarray(Image.open(png).convert("L"), dtype=float)
    return float(px.std())


def test_repair_in_the_browser(browser, tmp_path):
    view, _ = write_view(RUNS / "pace-qwen0.5b", tmp_path / "view.html", tokenizer="none")
    _open(browser, view, f"#p={REPAIRED}")
    q = browser.js
    assert q("document.querySelector('#detail').dataset.problem") == REPAIRED
    assert q("document.querySelectorAll('.source .cut').length") >= 1
    assert "answer" in q("document.querySelector('.hint').textContent")
    assert q("[...document.querySelectorAll('.cand .verdict')].map(e => e.textContent)").count("wrong answer") >= 1
    assert q("document.querySelectorAll('.cand .false-step').length") >= 1
    assert q("document.querySelector('.first-false').textContent")
    assert q("document.querySelectorAll('.source .breakpoint').length") >= 1
    # hover a step: the tooltip shows its mean entropy
    q("(() => { const el = document.querySelector('.source .st'); const r = el.getBoundingClientRect();"
      " el.dispatchEvent(new MouseEvent('mouseover', {bubbles: true, clientX: r.x + 2, clientY: r.y + 2})); })()")
    assert "mean entropy" in q("document.querySelector('#tip').textContent")
    # sorting and filtering the list
    q("document.querySelector('#q').value = 'tier:corner repair:verified'; document.querySelector('#q').dispatchEvent(new Event('input'))")
    tiers = q("[...document.querySelectorAll('#problems tbody tr td:nth-child(2)')].map(e => e.textContent)")
    assert tiers and set(tiers) == {"corner"}
    q("document.querySelector('#problems th[data-k=pass]').click()")
    shot = browser.screenshot(tmp_path / "repair.png")
    assert _not_blank(shot) > 20
    assert browser.errors == []


def test_tokens_hover_and_folds_in_the_browser(browser, tmp_path):
    run = vl.write_synthetic_run(tmp_path / "run", n_problems=30, long_tokens=12000)
    out = tmp_path / "view.html"
    out.write_text(render_view(collect(run, vl.CharTokenizer(), "chars")))
    _open(browser, out, f"#p={vl.LONG_ID}")
    q = browser.js
    drawn = q("document.querySelectorAll('.source .t').length")
    assert 0 < drawn < 12000  # long: windows around the breakpoint and the cut, the rest folded
    assert q("document.querySelectorAll('.source .t.breakpoint').length") == 1
    q("(() => { const el = document.querySelector('.source .t.breakpoint');"
      " el.dispatchEvent(new MouseEvent('mouseover', {bubbles: true, clientX: 5, clientY: 5})); })()")
    assert re.search(r"token \d+: .*\nentropy [\d.]+ nats · log-prob -?[\d.]+", q("document.querySelector('#tip').textContent"))
    q("document.querySelector('.source button.fold').click()")
    assert q("document.querySelectorAll('.source .t').length") > drawn
    q("document.querySelector('details.sample').open = true")
    assert q("document.querySelector('details.sample .trace').textContent.length") > 0
    assert browser.errors == []


def test_reasoning_blocks_fold_and_restarts_draw(browser, tmp_path):
    run = _tiny_run(tmp_path, n=4)
    guided = [json.loads(line) for line in (run / "guided.jsonl").open()]
    guided[0]["continuation"] = "<think>\n" + "".join(f"Thinking {i}.\n\n" for i in range(50)) + "</think>\n\nSo \\boxed{1}."
    atomic_write_jsonl(run / "guided.jsonl", guided)
    repairs = [json.loads(line) for line in (run / "repairs.jsonl").open()]
    for r in repairs:  # a token-level fallback that kept nothing: a restart
        r.update(cut_token=0, restart=True, breakpoint=dict(r["breakpoint"], mode="token_fallback", step=-1, kept_steps=0,
                                                            cut_token=0, restart=True))
    atomic_write_jsonl(run / "repairs.jsonl", repairs)
    view, _ = write_view(run, tokenizer="none")
    _open(browser, view, f"#p={guided[0]['problem_id']}")
    q = browser.js
    assert q("document.querySelectorAll('details.think').length") == 1
    assert "Thinking 3." not in q("document.querySelector('#detail').textContent")
    q("document.querySelector('details.think').open = true")
    assert "Thinking 3." in q("document.querySelector('details.think').textContent")
    _open(browser, view, f"#p={vl.LONG_ID}")
    assert "restart" in q("document.querySelector('.source .meta').textContent")
    assert q("document.querySelectorAll('.source .cut').length") >= 1
    assert browser.errors == []


def test_thousand_problems_and_a_32k_trace_open(browser, tmp_path):
    """Opens and draws (the time bound is benchmarks/view_load.py's, results in benchmarks/results)."""
    run = vl.write_synthetic_run(tmp_path / "run", n_problems=1000, long_tokens=32000)
    res = vl.measure(run, vl.CharTokenizer())
    assert res["console_errors"] == [] and 0 < res["long_tokens_drawn"] < 32000


def test_report_and_its_links_in_the_browser(browser, tmp_path):
    view, report = write_view(RUNS / "pace-qwen0.5b", tmp_path / "view.html", tokenizer="none")
    _open(browser, report)
    assert browser.js("document.querySelectorAll('svg.chart rect').length") > 10
    assert browser.js("document.querySelectorAll('table.report').length") >= 5
    href = browser.js("[...document.querySelectorAll('a')].map(a => a.getAttribute('href')).find(h => h.includes('tier:corner'))")
    _open(browser, view, href[len("view.html"):])
    tiers = browser.js("[...document.querySelectorAll('#problems tbody tr td:nth-child(2)')].map(e => e.textContent)")
    assert len(tiers) == 42 and set(tiers) == {"corner"}
    _open(browser, view, "#eval=heal&tier=corner")
    assert "held-out evaluation: heal" in browser.js("document.querySelector('#detail h2').textContent")
    assert browser.js("document.querySelectorAll('#detail table.evals tbody tr').length") == 41
    assert browser.errors == []


def test_malformed_run_page_names_the_line(browser, tmp_path):
    run = _tiny_run(tmp_path, n=4)
    (run / "scored.jsonl").write_text('{"key": "x"}\n{not json\n')
    view, _ = write_view(run, tokenizer="none")
    _open(browser, view)
    text = browser.js("document.querySelector('#notes').textContent")
    assert "scored.jsonl:2: not valid JSON" in text and "missing (not run yet, or run elsewhere): training sets" in text
    assert browser.js("document.querySelectorAll('#problems tbody tr').length") == 4
    assert browser.errors == []


def test_eval_tab_takes_tiers_from_tier_samples_and_hides_them(tmp_path):
    """With eval.tier_samples, the eval tab's tiers are the ones `heal eval` reports (from the
    teacher's tier samples) and the tier samples, scored by nobody, are not listed as answers."""
    from heal.view import _evals

    (tmp_path / "config.yaml").write_text("sample: {k: 4}\n")

    def rec(model, j, c):
        return {"model": model, "problem_id": "a", "sample": j, "correct": c, "pred": "1", "text": ""}
    evals = [rec("teacher", 0, True), rec("teacher", 1, True)] + [rec("teacher", f"tier{j}", False) for j in range(4)]
    out = _evals(evals, {"a": {"question": "q", "answer": "1"}}, tmp_path, n_samples=2)
    assert [r["sample"] for r in out["records"]] == [0, 1]
    assert {r["tier"] for r in out["records"]} == {"corner"}  # 0 of 4 tier samples; the scored ones say solved
    without = _evals(evals[:2], {"a": {"question": "q", "answer": "1"}}, tmp_path, n_samples=2)
    assert {r["tier"] for r in without["records"]} == {"solved"}
