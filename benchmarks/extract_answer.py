"""Answer extraction time on the inputs that made it quadratic (issue 13), before and after.

    python benchmarks/extract_answer.py

`old` is the extraction as it was (kept here as the reference: old_extract and old_boxed;
tests/test_verify.py checks that heal.verify agrees with them on 20,000 random texts), `new` is
heal.verify.extract_answer. Each input at doubling sizes:
time that grows 4x per doubling is quadratic, 2x linear. Best of 3 runs (1 for old above 1 s).
Writes benchmarks/results/extract-answer.json.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path

from heal.verify import extract_answer

_OLD_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_OLD_PHRASE_RE = re.compile(
    r"(?:final answer|the answer)\s*(?:is|=|:)\s*[:\s]*(.+)|^\s*\**answer\**\s*[:=]\s*(.+)",
    re.IGNORECASE | re.MULTILINE,
)


def old_boxed(text: str) -> tuple[int, int] | None:
    """The old span of the last closed \\boxed{...}'s content (quadratic on unclosed boxes)."""
    for m in reversed(list(_OLD_BOX_RE.finditer(text))):
        depth = 0
        for i in range(m.end() - 1, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return m.end(), i
    return None


def old_extract(text: str) -> tuple[str | None, str]:
    """The old extract_answer: the last closed box, else the last answer phrase."""
    span = old_boxed(text)
    if span is not None:
        return text[span[0] : span[1]].strip(), "boxed"
    matches = list(_OLD_PHRASE_RE.finditer(text))
    if matches:
        s = (matches[-1].group(1) or matches[-1].group(2) or "").strip().strip("*").strip().rstrip(".").strip()
        s = re.sub(r"^(\$+|\\\(|\\\[)|(\$+|\\\)|\\\])$", "", s).strip().rstrip(".").strip()
        if s:
            return s, "phrase"
    return None, "none"


INPUTS = {
    "unclosed_boxes": lambda n: "\\boxed{" * n,  # issue: 8,000 took 11.8 s
    "blank_lines": lambda n: " \n" * n,  # issue: 20,000 took 8.1 s
    "answer_then_newlines": lambda n: "The answer is" + "\n" * n,
    "dollar_run": lambda n: "Answer: 3" + "$" * n + "x",  # a trailing-$ regex retried from every $
}
SIZES = {"unclosed_boxes": [1000, 2000, 4000, 8000], "blank_lines": [2500, 5000, 10000, 20000],
         "answer_then_newlines": [2500, 5000, 10000, 20000], "dollar_run": [2500, 5000, 10000, 20000]}


def timed(fn, text: str) -> tuple[float, tuple]:
    best, result = float("inf"), None
    for _ in range(3):
        t0 = time.perf_counter()
        result = fn(text)
        best = min(best, time.perf_counter() - t0)
        if best > 1.0:
            break
    return best, result


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    load = os.getloadavg()[0]  # other processes on the cores slow the old quadratic code most
    rows = []
    for name, make in INPUTS.items():
        for n in SIZES[name] + [SIZES[name][-1] * 100]:  # the last size: new only (old would take hours)
            text = make(n)
            new_s, new_r = timed(extract_answer, text)
            answer = new_r[0] if new_r[0] is None or len(new_r[0]) <= 20 else f"{new_r[0][:10]}... ({len(new_r[0])} chars)"
            row = {"input": name, "n": n, "chars": len(text), "new_s": round(new_s, 5), "result": [answer, new_r[1]]}
            if n <= SIZES[name][-1]:
                old_s, old_r = timed(old_extract, text)
                assert old_r == new_r, (name, n, old_r, new_r)
                row["old_s"] = round(old_s, 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"cpu": cpu_name(), "python": platform.python_version(),
           "cores": os.cpu_count(), "load_avg_1min_at_start": round(load, 2),
           "note": "best of 3 (1 for old above 1 s)", "rows": rows}
    path = Path(__file__).parent / "results" / "extract-answer.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
