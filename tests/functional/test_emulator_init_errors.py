"""Init failures end with Lambda's error type and a clear message, never a hang; the next
invocation tries init again. Bad command lines are one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.emulator import REPO, Emulator, read_jsonl, write_extension


def not_executable(opt: Path, tmp_path: Path) -> None:
    (opt / "extensions").mkdir(parents=True)
    (opt / "extensions" / "plain-file").write_text("#!/bin/sh\nexit 0\n")


def crashing(opt: Path, tmp_path: Path) -> None:
    (opt / "extensions").mkdir(parents=True)
    script = opt / "extensions" / "crasher"
    script.write_text("#!/bin/sh\nexit 3\n")
    script.chmod(0o755)


def init_error(opt: Path, tmp_path: Path) -> None:
    write_extension(opt, "failing", "probe_extension.py", "failing", "--init-error", "Extension.ConfigInvalid")


def never_registers(opt: Path, tmp_path: Path) -> None:
    # registers under another name, so the file 'silent' never completes its registration
    write_extension(opt, "silent", "probe_extension.py", "silent", "--register-as", "someone-else",
                    "--events", "INVOKE")


def nothing(opt: Path, tmp_path: Path) -> None:
    pass


CASES = [
    # (handler, layer set-up, error type, message fragment)
    ("nosuch.handler", nothing, "Runtime.ImportModuleError", "No module named 'nosuch'"),
    ("functions.nope", nothing, "Runtime.HandlerNotFound", "nope"),
    ("hang_on_import.handler", nothing, "Sandbox.Timedout",
     "Init timed out after 1.00 seconds (still waiting for: runtime to call next)"),
    ("functions.echo", not_executable, "Extension.LaunchError", "plain-file: permission denied"),
    ("functions.echo", crashing, "Extension.Crash", "extension crasher exited: exit status 3"),
    ("functions.echo", init_error, "Extension.InitError",
     "extension failing failed to initialize: Extension.ConfigInvalid"),
    ("functions.echo", never_registers, "Sandbox.Timedout", "extension silent to register"),
]


@pytest.mark.parametrize(("handler", "setup", "error_type", "fragment"), CASES,
                         ids=[c[2] + "-" + c[1].__name__ for c in CASES])
def test_init_errors_give_lambdas_error_types(tmp_path: Path, handler: str, setup, error_type: str,
                                              fragment: str) -> None:
    # given a broken function or layer
    opt = tmp_path / "opt"
    setup(opt, tmp_path)
    with Emulator(opt=opt, handler=handler, extra_args=["--init-timeout", "1"]) as emu:
        # when it is invoked
        result = emu.invoke({}, timeout=30)
        # then the caller gets the error type with X-Amz-Function-Error, as Lambda answers
        assert result.status == 200
        assert result.headers["X-Amz-Function-Error"] == "Unhandled"
        assert result.json()["errorType"] == error_type
        assert fragment in result.json()["errorMessage"]
        [init] = emu.records("init")
        assert init["errorType"] == error_type
        assert init["status"] == ("error" if error_type.startswith("Runtime.") else
                                  "timeout" if error_type == "Sandbox.Timedout" else "failure")
        # and the next invocation tries init again
        assert emu.invoke({}, timeout=30).json()["errorType"] == error_type
        assert len(emu.records("init")) == 2
        assert emu.stop() == 0


def test_extension_registered_for_shutdown_gets_failure_when_init_fails(tmp_path: Path) -> None:
    # given a healthy extension and a function that cannot be imported
    opt = tmp_path / "opt"
    log = tmp_path / "ext.jsonl"
    write_extension(opt, "observer", "probe_extension.py", "observer", "--log", str(log))
    with Emulator(opt=opt, handler="nosuch.handler") as emu:
        assert emu.invoke({}).json()["errorType"] == "Runtime.ImportModuleError"
    # then the extension was told to shut down with reason failure
    events = [e["event"] for e in read_jsonl(log) if e.get("step") == "event"]
    assert [(e["eventType"], e["shutdownReason"]) for e in events] == [("SHUTDOWN", "failure")]


@pytest.mark.parametrize(("args", "message"), [
    (["--opt", ".", "--task", "."], "emulator: the following arguments are required: --handler (see --help)"),
    (["--opt", "/nonexistent-dir", "--task", ".", "--handler", "a.b"], "emulator: --opt /nonexistent-dir: not a directory"),
    (["--opt", ".", "--task", ".", "--handler", "a.b", "--memory", "64"],
     "emulator: --memory must be between 128 and 10240 MB, got 64"),
    (["--opt", ".", "--task", ".", "--handler", "a.b", "--listen", "9000"],
     "emulator: --listen must be HOST:PORT (port 0 picks a free one), got '9000'"),
    (["--opt", ".", "--task", ".", "--handler", "handler"], "emulator: --handler must be module.function, got 'handler'"),
])
def test_bad_command_line_is_one_clear_line(args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "emulator", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [message]


def test_busy_port_is_one_clear_line() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "emulator", "--opt", ".", "--task", ".", "--handler", "a.b",
             "--listen", f"127.0.0.1:{port}", "--runtime-api", "127.0.0.1:0"],
            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"emulator: cannot listen on --listen 127.0.0.1:{port}: Address already in use"]
