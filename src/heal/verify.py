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

from heal.problems import ProblemError

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
# Two alternatives: "final answer is X" / "the answer: X", and a line "Answer: X". Written so that no
# position is tried twice: `[:\s]*` is one run (the former `\s*[:\s]*` tried every split of a run,
# quadratic in its length), and a line may start only with spaces, not newlines (the former `^\s*` ran
# from every line start to the end of a blank tail: 20,000 " \n" took 8 s). Both match the same answers.
_PHRASE_RE = re.compile(
    r"(?:final answer|the answer)\s*(?:is|=|:)[:\s]*(.+)|^[^\S\n]*\**answer\**\s*[:=]\s*(.+)",
    re.IGNORECASE | re.MULTILINE,
)
_MATH_OPEN_RE = re.compile(r"\$+|\\\(|\\\[")
_BRACE_RE = re.compile(r"[{}]")


def _closing_braces(text: str, start: int) -> dict[int, int]:
    """{position of `{`: position of its matching `}`} for text[start:], in one pass (a stack), so
    finding the closed box among thousands of unclosed ones stays linear. An unmatched `}` is ignored,
    as a scan from its `{` would never see it."""
    match, stack = {}, []
    for m in _BRACE_RE.finditer(text, start):
        if m.group() == "{":
            stack.append(m.start())
        elif stack:
            match[stack.pop()] = m.start()
    return match


def _last_box(text: str) -> tuple[int, int] | None:
    """(start, end) of the content of the last `\\boxed{...}` / `\\fbox{...}` that closes."""
    opens = [m.end() - 1 for m in _BOX_RE.finditer(text)]
    if not opens:
        return None
    closing = _closing_braces(text, opens[0])
    for at in reversed(opens):
        if at in closing:
            return at + 1, closing[at]
    return None


def last_boxed(text: str) -> str | None:
    span = _last_box(text)
    return text[span[0] : span[1]].strip() if span else None


def boxed_span(text: str) -> tuple[int, int] | None:
    """Character span of the last complete `\\boxed{...}` content (used to find answer tokens)."""
    return _last_box(text)


def _clean_phrase(s: str) -> str:
    """Strip emphasis, a final full stop and one math delimiter at each end ("$-14,282$." -> "-14,282").
    Plain string operations: a regex for a trailing run of `$` is retried from every `$` of a long run."""
    s = s.strip().strip("*").strip().rstrip(".").strip()
    m = _MATH_OPEN_RE.match(s)
    if m:
        s = s[m.end() :]
    if s.endswith("$"):
        s = s.rstrip("$")
    elif s.endswith(("\\)", "\\]")):
        s = s[:-2]
    return s.strip().rstrip(".").strip()


def extract_answer(text: str) -> tuple[str | None, str]:
    """(answer, how): how is "boxed", "phrase" or "none". Linear in len(text)."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed, "boxed"
    m = None
    for m in _PHRASE_RE.finditer(text):
        pass
    if m is not None:
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


def _parse_gold(gold: str, t: int) -> list:
    from math_verify import parse

    g = parse(f"${gold}$", parsing_timeout=t, raise_on_error=True)
    # parse() falls back to the bare string when it cannot read the LaTeX ("\\frac{", "???"; nothing at
    # all for ""); verify() then matches only that exact string, so every answer would be "wrong".
    if not any(not isinstance(x, str) for x in g):
        raise ValueError(f"math-verify could not parse the ground truth {gold!r}")
    return g


# Wrappers a model may put around an option letter: \text{B}, \textbf{(B)}, \mathrm{B}, $B$.
_WRAP_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_LEAD_RE = re.compile(r"^(?:the\s+)?(?:correct\s+)?(?:option|choice|answer)\s*(?:is\s*)?[:\-]?\s*", re.IGNORECASE)
# "(B)" with anything after it, or "B" alone or followed by ")", "." or ":" ("B) 42", "B. Paris").
# A capital followed by a space is not taken ("A metal compound" is an option's text, not a letter).
_LETTER_RE = re.compile(r"\(([A-Za-z])\)|([A-Z])(?:$|[.):](?:\s|$))")


def choice_letter(pred: str) -> str | None:
    """The option letter an extracted answer names (upper case), or None. math-verify would read
    letters as symbols: "D) 42" as 42, "A." or "Option B" not at all, so choices are compared here."""
    s = pred.strip()
    for _ in range(3):  # nested wrappers: \textbf{\text{B}}
        s = _WRAP_RE.sub(r"\1", s)
    s = _LEAD_RE.sub("", s.replace("\\ ", " ").strip().strip("$").strip())
    if re.fullmatch(r"[a-z]", s):  # a lone lower-case letter; inside text "a" is an article
        return s.upper()
    m = _LETTER_RE.match(s)
    return (m.group(1) or m.group(2)).upper() if m else None


def _is_choice(meta: dict | None) -> bool:
    return (meta or {}).get("answer_kind") == "choice"


def _compare(method: str, gold: str, pred: str, meta: dict | None, timeout_s: float) -> bool:
    """Runs inside the worker process. A multiple-choice problem (meta.answer_kind "choice", e.g. the
    gpqa preset) compares option letters, whatever verify.method says."""
    if _is_choice(meta):
        return choice_letter(pred) == gold.strip().upper()
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
    g = _parse_gold(gold, t)
    p = parse(f"${pred}$", parsing_timeout=t, raise_on_error=True)
    if not p:
        return False  # an answer with no mathematical content is wrong, not an error
    return bool(verify(g, p, timeout_seconds=t, raise_on_error=True))


def _check_gold(method: str, gold: str, meta: dict | None, timeout_s: float) -> bool:
    """Runs inside the worker: raises unless `gold` can be verified against."""
    if _is_choice(meta):
        letters = sorted((meta or {}).get("choices") or [])
        if choice_letter(gold) is None or (letters and gold.strip().upper() not in letters):
            raise ValueError(f"the gold {gold!r} of a multiple-choice problem is not one of its option letters "
                             f"{letters or 'A-Z'}")
    elif method == "reasoning_gym":
        if not _compare(method, gold, gold, meta, timeout_s):
            raise ValueError(f"the task's scorer does not accept the ground truth {gold!r} as an answer to itself")
    else:
        _parse_gold(gold, max(1, int(timeout_s)))
    return True


def _serve() -> None:
    """The worker: JSON requests on stdin, one JSON reply per line on the original stdout."""
    out = os.fdopen(os.dup(1), "w")
    sys.stdout = sys.stderr  # nothing a library prints may corrupt the reply stream
    for line in sys.stdin:
        try:
            req = json.loads(line)
            if req.get("op") == "gold":
                ok = _check_gold(req["method"], req["gold"], req.get("meta"), req["timeout_s"])
            else:
                ok = _compare(req["method"], req["gold"], req["pred"], req.get("meta"), req["timeout_s"])
            reply = {"ok": ok}
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

    def _request(self, req: dict) -> tuple[bool | None, str | None]:
        """(reply, error) of one worker request, within the timeout."""
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        # The first request also pays for the worker's imports (sympy, math-verify).
        wait = self.timeout_s + (0 if self._warm else 60)
        req = {"method": self.method, "timeout_s": self.timeout_s, **req}
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

    def compare(self, gold: str, pred: str, meta: dict | None = None) -> tuple[bool | None, str | None]:
        """(correct, error)."""
        return self._request({"gold": gold, "pred": pred, "meta": meta})

    def gold_error(self, gold: str, meta: dict | None = None) -> str | None:
        """Why answers cannot be verified against `gold` (None: they can)."""
        return self._request({"op": "gold", "gold": gold, "meta": meta})[1]

    def check(self, text: str, gold: str, meta: dict | None = None) -> Verdict:
        pred, how = extract_answer(text)
        if pred is None:
            return Verdict(pred=None, extraction=how, correct=False)
        correct, error = self.compare(gold, pred, meta)
        return Verdict(pred=pred, extraction=how, correct=correct, error=error)


def check_gold(problems: list, method: str = "math_verify", timeout_s: float = 5.0, on_error: str = "raise",
               skipped: list | None = None, verifier: Verifier | None = None) -> list:
    """The problems (Problem objects or their dicts) whose gold answer `method` can verify against.
    A gold it cannot read would make every answer to that problem "wrong"; call this once per problem
    set, before any generation. on_error="raise": ProblemError naming the first such problem;
    "skip": each is left out and listed in `skipped`, like a malformed record."""
    own = verifier is None
    verifier = verifier or Verifier(method=method, timeout_s=timeout_s)
    kept = []
    try:
        for p in problems:
            d = p if isinstance(p, dict) else p.to_dict()
            error = verifier.gold_error(d["answer"], d.get("meta"))
            if error is None:
                kept.append(p)
                continue
            error = error.removeprefix("ValueError: ")  # the worker's own refusal, not a crash
            message = (f"problem '{d['id']}' ({d.get('source') or 'no source'}): {error} (verify.method: {method}); "
                       f"correct the answer in the data, or set data.on_error: skip to leave the problem out")
            if on_error == "raise":
                raise ProblemError(message)
            if skipped is not None:
                skipped.append(message)
    finally:
        if own:
            verifier.close()
    return kept


if __name__ == "__main__":
    _serve()
