"""The emulator's execution environment as Lambda shapes it: the freeze, the CPU share and memory
limit of a memory size, the Shutdown phase with its deadline, --isolate, and clean exits."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from tests.fixtures.emulator import Emulator, read_jsonl, wait_until, write_extension

ROOT = os.geteuid() == 0


def register_pid(log: Path) -> int:
    entry = wait_until(lambda: [e for e in read_jsonl(log) if e.get("step") == "register"], what="register")
    return int(entry[0]["pid"])


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def is_stopped(pid: int) -> bool:
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED


def frozen_state(emu: Emulator) -> str:
    return Path(emu.ready["cgroups"]["freezer"], "freezer.state").read_text().strip()


@pytest.mark.parametrize("freezer", ["cgroup", "signal"])
def test_frozen_processes_accrue_no_cpu_time(tmp_path: Path, freezer: str) -> None:
    if freezer == "cgroup" and not ROOT:
        pytest.skip("the cgroup freezer needs root")
    # given an extension that burns CPU on a background thread all the time
    opt = tmp_path / "opt"
    log = tmp_path / "ext.jsonl"
    write_extension(opt, "spinner", "probe_extension.py", "spinner", "--log", str(log), "--spin")
    with Emulator(opt=opt, handler="functions.sleep", extra_args=["--freezer", freezer]) as emu:
        assert emu.ready["freeze"] == freezer
        # when an invocation has ended (everyone called next)
        assert emu.invoke({"seconds": 0}).status == 200
        emu.wait_records(1)
        pid = register_pid(log)
        if freezer == "cgroup":
            wait_until(lambda: frozen_state(emu) == "FROZEN", what="FROZEN")
        else:
            wait_until(lambda: is_stopped(pid), what="the extension to be stopped")
        # then its CPU time does not advance over a window while frozen
        before = cpu_seconds(pid)
        time.sleep(0.3)  # a measurement window, not synchronisation
        assert cpu_seconds(pid) == before
        # and it does advance while the environment is thawed for the next invocation
        assert emu.invoke({"seconds": 0.3}).status == 200
        assert cpu_seconds(pid) > before
        assert emu.stop() == 0


@pytest.mark.skipif(not ROOT, reason="the cgroup cpu and memory controllers need root")
def test_memory_128_gives_a_busy_handler_about_seven_percent_of_a_core(tmp_path: Path) -> None:
    # given the smallest memory size
    with Emulator(opt=tmp_path / "opt", handler="functions.busy", memory=128, timeout=20) as emu:
        assert emu.ready["limits"] == "cgroup"
        quota = Path(emu.ready["cgroups"]["cpu"], "cpu.cfs_quota_us").read_text().strip()
        period = Path(emu.ready["cgroups"]["cpu"], "cpu.cfs_period_us").read_text().strip()
        assert (quota, period) == ("7236", "100000")
        limit = Path(emu.ready["cgroups"]["memory"], "memory.limit_in_bytes").read_text().strip()
        assert limit == str(128 * 1024 * 1024)
        # when the handler spins for a second of wall time
        result = emu.invoke({"seconds": 1.0}, timeout=60).json()
    # then it got about 7% of a core (a generous band: this checks the quota, not the machine)
    share = result["cpu"] / result["wall"]
    assert 0.03 <= share <= 0.15, share


@pytest.mark.skipif(not ROOT, reason="the cgroup cpu controller needs root")
def test_init_runs_with_burst_cpu_and_invocations_with_the_memory_share(tmp_path: Path) -> None:
    # given a 128 MB function that reads its CPU quota during Init and in the handler
    with Emulator(opt=tmp_path / "opt", handler="cpu_quota.handler", memory=128) as emu:
        assert emu.ready["limits"] == "cgroup"
        result = emu.invoke({}).json()
    # then Init had two vCPUs, as Lambda's on-demand Init has, and the invocation 7.2%
    assert result == {"init": 200000, "invoke": 7236}


@pytest.mark.skipif(not ROOT, reason="the cgroup memory controller needs root")
def test_allocating_past_the_memory_limit_resets_the_environment(tmp_path: Path) -> None:
    # given a 128 MB function
    with Emulator(opt=tmp_path / "opt", handler="functions.allocate", memory=128, timeout=20) as emu:
        # when the handler allocates 300 MB
        result = emu.invoke({"mb": 300}, timeout=60)
        # then the kernel killed it and the caller gets Runtime.OutOfMemory
        assert result.status == 200
        assert result.headers["X-Amz-Function-Error"] == "Unhandled"
        assert result.json()["errorType"] == "Runtime.OutOfMemory"
        assert result.json()["errorMessage"].endswith("Runtime exited with error: signal: killed")
        # and the environment was reset: the next invocation initialises again
        again = emu.invoke({"mb": 1}, timeout=60)
        assert again.json() == {"allocated": 1}
        records = emu.wait_records(2)
        assert [(r["status"], r["errorType"], r["coldStart"]) for r in records] == [
            ("failure", "Runtime.OutOfMemory", True), ("success", None, True)]


def test_shutdown_gives_the_deadline_and_kills_an_extension_that_ignores_it(tmp_path: Path) -> None:
    # given one extension that exits on SHUTDOWN and one that ignores it
    opt = tmp_path / "opt"
    polite, stubborn = tmp_path / "polite.jsonl", tmp_path / "stubborn.jsonl"
    write_extension(opt, "polite", "probe_extension.py", "polite", "--log", str(polite))
    write_extension(opt, "stubborn", "probe_extension.py", "stubborn", "--log", str(stubborn),
                    "--ignore-shutdown")
    with Emulator(opt=opt, handler="functions.echo") as emu:
        assert emu.invoke({}).status == 200
        runtime_pid = emu.invoke({}).json()["pid"]
        stubborn_pid, polite_pid = register_pid(stubborn), register_pid(polite)
        sent_ms = int(time.time() * 1000)
        # when the emulator is stopped
        code = emu.stop()
    # then it exits 0 after a Shutdown phase whose deadline is 2,000 ms from its start
    assert code == 0
    started = emu.output.wait_for(r"shutdown: reason=spindown deadlineMs=(\d+)")
    deadline_ms = int(started.group(1))
    assert sent_ms + 2000 <= deadline_ms
    for log in (polite, stubborn):
        events = [e["event"] for e in read_jsonl(log) if e.get("step") == "event"]
        assert events[-1] == {"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": deadline_ms}
    # and the extension that ignored it was killed at the deadline, the polite one was not
    assert [e["step"] for e in read_jsonl(polite)][-1] == "exit"
    assert "ignoring-shutdown" in [e["step"] for e in read_jsonl(stubborn)]
    assert f"shutdown: killed extension stubborn (pid {stubborn_pid}) at the deadline" in emu.output.text
    assert "killed extension polite" not in emu.output.text
    for pid in (stubborn_pid, polite_pid, runtime_pid):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_stopping_leaves_no_process_and_no_cgroup_behind(tmp_path: Path) -> None:
    # given a running environment with an extension
    opt = tmp_path / "opt"
    log = tmp_path / "ext.jsonl"
    write_extension(opt, "observer", "probe_extension.py", "observer", "--log", str(log))
    with Emulator(opt=opt, handler="functions.echo", extra_args=["--no-freeze"]) as emu:
        runtime_pid = emu.invoke({}).json()["pid"]
        ext_pid = register_pid(log)
        groups = list(emu.ready["cgroups"].values())
        # when it gets SIGINT
        import signal

        code = emu.stop(sig=signal.SIGINT)
    # then it exits 0, its processes are gone, and its cgroups are removed
    assert code == 0
    assert emu.ready["freeze"] == "off"
    for pid in (runtime_pid, ext_pid):
        assert not psutil.pid_exists(pid)
    for group in groups:
        assert not Path(group).exists()


@pytest.mark.skipif(not ROOT, reason="--isolate needs root")
def test_isolate_gives_opt_var_task_and_sandbox_names(tmp_path: Path) -> None:
    # given a layer with a python package and an extension, run with --isolate
    opt = tmp_path / "opt"
    (opt / "python").mkdir(parents=True)
    (opt / "marker").write_text("layer")
    log = tmp_path / "ext.jsonl"
    write_extension(opt, "observer", "probe_extension.py", "observer", "--log", str(log), "--subscribe",
                    "--wait-for", "platform.start")
    with Emulator(opt=opt, handler="functions.sandbox_view", extra_args=["--isolate"]) as emu:
        # when the function looks around
        seen = emu.invoke({}).json()
    # then the layer is /opt, the code is a read-only /var/task, and sandbox names are loopback
    assert seen["opt"] == ["extensions", "marker", "python"]
    assert seen["task_root"] == "/var/task"
    assert seen["cwd"] == "/var/task"
    path = seen["path"]
    assert path.index("/var/task") < path.index("/opt/python/lib/python3.11/site-packages") \
        < path.index("/opt/python")
    assert seen["task_writable"] is False
    assert seen["sandbox"] == "127.0.0.1"
    assert seen["sandbox.localdomain"] == "127.0.0.1"
    # and the extension (started as /opt/extensions/observer) got its telemetry
    waited = [e for e in read_jsonl(log) if e.get("step") == "waited"]
    assert waited and waited[0]["got"] is True
    # and nothing leaked into the host's namespace
    assert not Path("/opt/marker").exists()
