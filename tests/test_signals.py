"""SIGTERM stops a stage the way Ctrl-C does: cleanup runs (engines close, vLLM's EngineCore child
is not orphaned), in the `heal` CLI and in the PACE experiment's evaluation child."""

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Stands in for a stage holding an engine: its `finally` is where engine.close() runs.
STAGE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from heal.cli import exit_on_sigterm
    exit_on_sigterm()
    Path(sys.argv[1]).write_text("started")
    try:
        time.sleep(60)
    finally:
        Path(sys.argv[1]).write_text("closed")
""")


def _wait_for(path: Path, text: str, timeout: float = 30.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if path.exists() and path.read_text() == text:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never said {text!r}")


def test_sigterm_runs_cleanup_and_exits_143(tmp_path):
    marker = tmp_path / "stage"
    proc = subprocess.Popen([sys.executable, "-c", STAGE, str(marker)])
    _wait_for(marker, "started")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert marker.read_text() == "closed"


def test_pace_experiment_passes_sigterm_on_to_its_eval_child(tmp_path):
    """Killing the experiment stops its evaluation child with SIGTERM (its cleanup runs), not SIGKILL."""
    marker = tmp_path / "child"
    parent = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / "experiments")!r})
        from heal.cli import exit_on_sigterm
        from pace_experiment import run_child
        exit_on_sigterm()
        run_child([sys.executable, "-c", {STAGE!r}, {str(marker)!r}], dict(__import__("os").environ))
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent])
    _wait_for(marker, "started")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert marker.read_text() == "closed"
