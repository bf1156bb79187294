"""Final-answer extraction and verification.

`extract_answer` takes the last `\\boxed{}` (brace-matched), falling back to an explicit
"final answer is ..." / "Answer: ..." phrase. `Verifier` compares the extracted answer with the
ground truth using math-verify (or a reasoning-gym task's own scorer) inside a worker process with
a hard timeout: a pathological input can never hang or crash a run, and a verifier failure is
recorded as an error (`correct=None`), never as a silent "wrong".
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
from dataclasses import asdict, dataclass

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_PHRASE_RE = re.compile(
    r"(?:final answer|the answer)\s*(?:is|=|:)\s*[:\s]*(.+)|^\s*\**answer\**\s*[:=]\s*(.+)",
    re.IGNORECASE | re.MULTILINE,
)


def _matched_braces(text: str, open_at: int) -> str | None:
    """Content of the brace group whose `{` is at open_at, or None if it never closes."""
    depth = 0
    for i in range(open_at, len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    return None


def last_boxed(text: str) -> str | None:
    for m in reversed(list(_BOX_RE.finditer(text))):
        content = _matched_braces(text, m.end() - 1)
        if content is not None:
            return content.strip()
    return None


def boxed_span(text: str) -> tuple[int, int] | None:
    """Character span of the last complete `\\boxed{...}` content (used to find answer tokens)."""
    for m in reversed(list(_BOX_RE.finditer(text))):
        content = _matched_braces(text, m.end() - 1)
        if content is not None:
            return m.end(), m.end() + len(content)
    return None


def _clean_phrase(s: str) -> str:
    s = s.strip().strip("*").strip().rstrip(".").strip()
    s = re.sub(r"^(\$+|\\\(|\\\[)|(\$+|\\\)|\\\])$", "", s).strip()
    return s.rstrip(".").strip()


def extract_answer(text: str) -> tuple[str | None, str]:
    """(answer, how): how is "boxed", "phrase" or "none"."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed, "boxed"
    matches = list(_PHRASE_RE.finditer(text))
    if matches:
        m = matches[-1]
        ans = _clean_phrase(m.group(1) or m.group(2) or "")
        if ans:
            return ans, "phrase"
    return None, "none"


@dataclass
class Verdict:
    pred: str | None  # the extracted answer
    extraction: str  # "boxed" | "phrase" | "none"
    correct: bool | None  # None: the verifier failed (see error)
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _compare(method: str, gold: str, pred: str, meta: dict | None, timeout_s: float) -> bool:
    """Runs inside the worker process."""
    if method == "reasoning_gym":
        import reasoning_gym

        task = (meta or {}).get("task") or (meta or {}).get("source_dataset")
        if not task:
            raise ValueError("reasoning_gym verification needs meta.task")
        ds = reasoning_gym.create_dataset(task, size=1, seed=0)
        entry = {"question": "", "answer": gold, "metadata": meta or {}}
        return float(ds.score_answer(pred, entry)) >= 1.0
    from math_verify import parse, verify

    t = max(1, int(timeout_s))
    g = parse(f"${gold}$", parsing_timeout=t, raise_on_error=True)
    p = parse(f"${pred}$", parsing_timeout=t, raise_on_error=True)
    if not g:
        raise ValueError(f"math-verify could not parse the ground truth {gold!r}")
    if not p:
        return False  # an answer with no mathematical content is wrong, not an error
    return bool(verify(g, p, timeout_seconds=t, raise_on_error=True))


def _serve() -> None:
    """The worker: JSON requests on stdin, one JSON reply per line on the original stdout."""
    out = os.fdopen(os.dup(1), "w")
    sys.stdout = sys.stderr  # nothing a library prints may corrupt the reply stream
    for line in sys.stdin:
        try:
            req = json.loads(line)
            reply = {"ok": _compare(req["method"], req["gold"], req["pred"], req.get("meta"), req["timeout_s"])}
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # math-verify's TimeoutException is a BaseException
            reply = {"error": f"{type(e).__name__}: {e}"[:500]}  # an error, never a silent "wrong"
        out.write(json.dumps(reply) + "\n")
        out.flush()


class Verifier:
    """Verifies answers in a persistent worker process (`python -m heal.verify`), killed and
    restarted after a timeout or crash. A subprocess rather than multiprocessing: it never
    re-imports the caller's main module and never forks a process that holds model threads."""

    def __init__(self, method: str = "math_verify", timeout_s: float = 5.0):
        self.method, self.timeout_s = method, timeout_s
        self._proc: subprocess.Popen | None = None
        self._warm = False

    def _start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "heal.verify"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, bufsize=1,
        )
        self._warm = False

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.stdin.close()
                self._proc.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def compare(self, gold: str, pred: str, meta: dict | None = None) -> tuple[bool | None, str | None]:
        """(correct, error)."""
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        # The first request also pays for the worker's imports (sympy, math-verify).
        wait = self.timeout_s + (0 if self._warm else 60)
        req = {"method": self.method, "gold": gold, "pred": pred, "meta": meta, "timeout_s": self.timeout_s}
        try:
            self._proc.stdin.write(json.dumps(req, default=str) + "\n")
            self._proc.stdin.flush()
            ready, _, _ = select.select([self._proc.stdout], [], [], wait)
            if not ready:
                self._kill()
                return None, f"timeout after {self.timeout_s}s"
            line = self._proc.stdout.readline()
        except OSError as e:
            self._kill()
            return None, f"verifier worker died: {type(e).__name__}"
        if not line:
            self._kill()
            return None, "verifier worker died"
        self._warm = True
        reply = json.loads(line)
        return (bool(reply["ok"]), None) if "ok" in reply else (None, reply["error"])

    def check(self, text: str, gold: str, meta: dict | None = None) -> Verdict:
        pred, how = extract_answer(text)
        if pred is None:
            return Verdict(pred=None, extraction=how, correct=False)
        correct, error = self.compare(gold, pred, meta)
        return Verdict(pred=pred, extraction=how, correct=correct, error=error)


if __name__ == "__main__":
    _serve()
