"""`make run`: the demo builds the layer, runs both modes under the emulator, prints its table,
leaves nothing running, and exits 0."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from tests.fixtures.layer import REPO, host_arch

TIMEOUT_S = 300


def demo_processes() -> dict[int, str]:
    """Live processes whose command line names a demo work directory."""
    found = {}
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("status") != psutil.STATUS_ZOMBIE and any(
            "afterflush-run-" in part for part in cmdline
        ):
            found[proc.pid] = " ".join(cmdline)
    return found


def wait_until_gone(pids: set[int], timeout: float = 10.0) -> dict[int, str]:
    """Polls every 10 ms until none of `pids`' kind is left; returns what is still there."""
    deadline = time.monotonic() + timeout
    while True:
        left = {pid: cmd for pid, cmd in demo_processes().items() if pid not in pids}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.01)


def test_run_compares_afterflush_with_a_synchronous_pipeline_and_stops_everything(tmp_path):
    before = set(demo_processes())
    done = subprocess.run(
        [sys.executable, "-m", "scripts.run_demo", "--invocations", "3", "--latency-ms", "100",
         "--items", "1", "--dist", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()
            if line.startswith(("afterflush ", "synchronous ")) and " spans, " in line}
    # Then both modes delivered all they produced: 3 spans, 1 point and 1 log per invocation
    for mode in ("afterflush", "synchronous"):
        assert rows[mode].endswith("9/9 spans, 3/3 points, 3/3 logs"), rows[mode]
    assert "afterflush init (extension and runtime" in done.stdout
    # And the layer it ran is where it was asked to build it
    assert [p.name for p in tmp_path.iterdir()] == [f"afterflush-python-{host_arch()}.zip"]
    # And nothing it started is left (processes that were exiting as it returned get a moment)
    assert wait_until_gone(before) == {}
