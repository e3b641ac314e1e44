"""The emulator's invoke phase with the real awslambdaric: response timing against extensions,
one invocation at a time, telemetry order and billing, errors, timeouts and resets."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from tests.fixtures.emulator import Emulator, read_jsonl, wait_until, write_extension


def release(fifo: Path, timeout: float = 10.0) -> None:
    """Lets a probe extension holding on fifo go on (waits, bounded, for it to open the fifo)."""

    def try_open() -> int | None:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no reader yet
                return None
            raise

    fd = wait_until(try_open, timeout, f"a reader on {fifo.name}")
    try:
        os.write(fd, b"go\n")
    finally:
        os.close(fd)


def steps(log: Path, step: str) -> list[dict]:
    return [e for e in read_jsonl(log) if e.get("step") == step]


def holding_extension(tmp_path: Path) -> tuple[Path, Path, Path]:
    opt = tmp_path / "opt"
    fifo = tmp_path / "hold.fifo"
    os.mkfifo(fifo)
    log = tmp_path / "holder.jsonl"
    write_extension(opt, "holder", "probe_extension.py", "holder", "--log", str(log),
                    "--hold-fifo", str(fifo))
    return opt, fifo, log


def test_response_reaches_caller_while_extension_is_still_working(tmp_path: Path) -> None:
    # given an extension that, after INVOKE, waits for the test before it calls next
    opt, fifo, log = holding_extension(tmp_path)
    with Emulator(opt=opt, handler="functions.echo") as emu:
        # when the function is invoked
        result = emu.invoke({"n": 1})
        # then the caller has the response although the invocation has not ended
        assert result.status == 200
        assert result.json()["event"] == {"n": 1}
        wait_until(lambda: steps(log, "holding"), what="the extension to hold")
        assert emu.records() == []
        assert steps(log, "released") == []
        # and the invocation ends once the extension calls next
        release(fifo)
        [record] = emu.wait_records(1)
        assert record["status"] == "success"
        assert record["requestId"] == result.json()["requestId"]
        assert record["postRuntimeDurationMs"] > 0
        assert emu.stop() == 0


def test_next_invocation_waits_until_the_extension_calls_next(tmp_path: Path) -> None:
    # given an invocation whose extension is still working after the response
    opt, fifo, log = holding_extension(tmp_path)
    trace = tmp_path / "trace.jsonl"
    with Emulator(opt=opt, handler="functions.echo", env={"TEST_TRACE_FILE": str(trace)}) as emu:
        first = emu.invoke({"n": 1})
        assert first.status == 200
        wait_until(lambda: steps(log, "holding"), what="the extension to hold")
        # when a second invocation arrives
        pending = emu.invoke_in_thread({"n": 2})
        emu.output.wait_for(r"waiting for the previous invocation")
        # then its handler has not run while the extension works
        assert len(steps(trace, "handler")) == 1
        release(fifo)
        second = pending.result()
        assert second.status == 200
        assert second.json()["event"] == {"n": 2}
        # and it ran only after the extension had finished the first invocation
        handlers = steps(trace, "handler")
        released = steps(log, "released")
        assert [h["requestId"] for h in handlers] == [first.json()["requestId"], second.json()["requestId"]]
        assert released[0]["requestId"] == first.json()["requestId"]
        assert handlers[0]["t"] < released[0]["t"] < handlers[1]["t"]
        release(fifo)
        records = emu.wait_records(2)
        assert [r["status"] for r in records] == ["success", "success"]
        assert emu.stop() == 0


def test_runtime_done_arrives_before_report_and_billing_covers_post_invoke_work(tmp_path: Path) -> None:
    # given an extension that subscribes to telemetry and works 150 ms after platform.runtimeDone
    opt = tmp_path / "opt"
    log = tmp_path / "ext.jsonl"
    write_extension(opt, "worker", "probe_extension.py", "worker", "--log", str(log),
                    "--subscribe", "--work-ms", "150")
    with Emulator(opt=opt, handler="functions.echo") as emu:
        # when it is invoked twice
        first = emu.invoke({"n": 1}).json()["requestId"]
        second = emu.invoke({"n": 2}).json()["requestId"]
        records = emu.wait_records(2)
        wait_until(lambda: any(e.get("telemetry", {}).get("type") == "platform.report"
                               for e in read_jsonl(log)), what="platform.report")
        assert emu.stop() == 0
    events = [e["telemetry"] for e in read_jsonl(log) if "telemetry" in e]
    types = [e["type"] for e in events]
    # then init events came first, in order
    assert types.index("platform.initStart") < types.index("platform.initRuntimeDone") \
        < types.index("platform.initReport") < types.index("platform.start")
    # and for the first request runtimeDone came before report
    def index(kind: str, request_id: str) -> int:
        return next(i for i, e in enumerate(events)
                    if e["type"] == kind and e["record"]["requestId"] == request_id)

    assert index("platform.start", first) < index("platform.runtimeDone", first) < index("platform.report", first)
    done = events[index("platform.runtimeDone", first)]["record"]
    report = events[index("platform.report", first)]["record"]
    assert done["status"] == "success"
    assert [s["name"] for s in done["spans"]] == ["responseLatency", "responseDuration"]
    assert report["status"] == "success"
    assert report["metrics"]["memorySizeMB"] == 1769
    assert report["metrics"]["initDurationMs"] > 0
    # and the extension's work after runtimeDone is inside the billed duration
    [work] = [w for w in steps(log, "work") if w["requestId"] == first]
    assert work["sawRuntimeDone"] is True
    assert work["workMs"] >= 150
    assert report["metrics"]["billedDurationMs"] >= done["metrics"]["durationMs"] + work["workMs"]
    assert records[0]["requestId"] == first and records[1]["requestId"] == second
    assert records[0]["billedDurationMs"] == report["metrics"]["billedDurationMs"]
    assert records[0]["postRuntimeDurationMs"] >= work["workMs"]
    # and the function's output reached the subscriber as function log lines
    assert {"type": "function", "record": f"echo {first}"} in [
        {"type": e["type"], "record": e["record"]} for e in events]
    assert {"type": "extension", "record": "probe worker registered"} in [
        {"type": e["type"], "record": e["record"]} for e in events]


def test_function_error_answers_with_unhandled_and_keeps_the_environment(tmp_path: Path) -> None:
    # given a handler that raises
    with Emulator(opt=tmp_path / "opt", handler="functions.fail") as emu:
        # when it is invoked twice
        first = emu.invoke({})
        second = emu.invoke({})
        # then the caller gets the error document with X-Amz-Function-Error, as from Lambda
        assert first.status == 200
        assert first.headers["X-Amz-Function-Error"] == "Unhandled"
        assert first.json()["errorType"] == "ValueError"
        assert first.json()["errorMessage"] == "boom"
        assert second.json()["errorType"] == "ValueError"
        # and the environment was not reset
        records = emu.wait_records(2)
        assert [(r["status"], r["errorType"], r["coldStart"]) for r in records] == [
            ("error", "ValueError", True), ("error", "ValueError", False)]
        assert len(emu.records("init")) == 1


def test_runtime_crash_resets_with_failure_and_next_invoke_reinitialises(tmp_path: Path) -> None:
    # given an extension registered for SHUTDOWN and a handler that kills its process
    opt = tmp_path / "opt"
    log = tmp_path / "ext.jsonl"
    write_extension(opt, "observer", "probe_extension.py", "observer", "--log", str(log))
    with Emulator(opt=opt, handler="functions.crash") as emu:
        # when it is invoked
        result = emu.invoke({})
        # then the caller gets Runtime.ExitError
        assert result.status == 200
        assert result.headers["X-Amz-Function-Error"] == "Unhandled"
        assert result.json()["errorType"] == "Runtime.ExitError"
        assert result.json()["errorMessage"].endswith("Runtime exited with error: exit status 7")
        # and the extension was told to shut down with reason failure
        wait_until(lambda: [e for e in steps(log, "event") if e["event"]["eventType"] == "SHUTDOWN"],
                   what="SHUTDOWN")
        shutdown = [e["event"] for e in steps(log, "event") if e["event"]["eventType"] == "SHUTDOWN"]
        assert [s["shutdownReason"] for s in shutdown] == ["failure"]
        # and the next invocation initialises a fresh environment
        again = emu.invoke({})
        assert again.json()["errorType"] == "Runtime.ExitError"
        records = emu.wait_records(2)
        assert [(r["status"], r["coldStart"]) for r in records] == [("failure", True), ("failure", True)]
        assert len(steps(log, "register")) == 2


def test_extension_exiting_outside_shutdown_resets_the_environment(tmp_path: Path) -> None:
    # given an extension that exits when it gets INVOKE
    opt = tmp_path / "opt"
    log = tmp_path / "ext.jsonl"
    write_extension(opt, "quitter", "probe_extension.py", "quitter", "--log", str(log),
                    "--exit-on-invoke", "3")
    with Emulator(opt=opt, handler="functions.echo") as emu:
        # when the function is invoked twice
        emu.invoke({})
        emu.invoke({})
        # then each invocation ends in failure with Extension.Crash and a fresh init follows
        records = emu.wait_records(2)
        assert [(r["status"], r["errorType"], r["coldStart"]) for r in records] == [
            ("failure", "Extension.Crash", True), ("failure", "Extension.Crash", True)]
        assert len(steps(log, "register")) == 2


def test_extension_exit_error_resets_the_environment(tmp_path: Path) -> None:
    # given an extension that reports an exit error when it gets INVOKE
    opt = tmp_path / "opt"
    log = tmp_path / "ext.jsonl"
    write_extension(opt, "giver-up", "probe_extension.py", "giver-up", "--log", str(log),
                    "--exit-error-on-invoke", "Extension.Unrecoverable")
    with Emulator(opt=opt, handler="functions.echo") as emu:
        # when the function is invoked
        emu.invoke({})
        # then Lambda accepted the report and the invocation ended in failure with Extension.ExitError
        [record] = emu.wait_records(1)
        assert (record["status"], record["errorType"]) == ("failure", "Extension.ExitError")
        assert steps(log, "exit-error")[0]["status"] == 202
        emu.output.wait_for(r"extension giver-up exited with an error: Extension.Unrecoverable")
        emu.output.wait_for(r"shutdown: reason=failure")


def test_client_context_reaches_the_handler(tmp_path: Path) -> None:
    import base64

    context = {"custom": {"tenant": "blue"}, "env": {}, "client": {}}
    encoded = base64.b64encode(json.dumps(context).encode()).decode()
    with Emulator(opt=tmp_path / "opt", handler="functions.client_context") as emu:
        seen = emu.invoke({}, headers={"X-Amz-Client-Context": encoded}).json()
    assert seen == {"custom": {"tenant": "blue"}}


def test_runtime_python_option_names_the_interpreter(tmp_path: Path) -> None:
    # given an interpreter stand-in that records its use and runs this interpreter
    import sys

    marker = tmp_path / "used"
    python = tmp_path / "python3.11"
    python.write_text(f'#!/bin/sh\necho "$@" > {marker}\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    with Emulator(opt=tmp_path / "opt", handler="functions.echo",
                  extra_args=["--runtime-python", str(python)]) as emu:
        assert emu.invoke({}).status == 200
    assert marker.read_text().split() == ["-m", "awslambdaric", "functions.echo"]


def test_timeout_during_post_invoke_work_resets_and_next_invoke_reinitialises(tmp_path: Path) -> None:
    # given a 1 s timeout and an extension that keeps working after the response
    opt, fifo, log = holding_extension(tmp_path)
    with Emulator(opt=opt, handler="functions.echo", timeout=1) as emu:
        # when the function is invoked and the extension does not call next in time
        first = emu.invoke({"n": 1})
        assert first.status == 200
        assert "X-Amz-Function-Error" not in first.headers
        # then the invocation times out and the environment is reset with reason timeout
        emu.output.wait_for(r"shutdown: reason=timeout")
        release(fifo)
        wait_until(lambda: [e for e in steps(log, "event") if e["event"]["eventType"] == "SHUTDOWN"],
                   what="SHUTDOWN")
        [record] = emu.wait_records(1)
        assert (record["status"], record["errorType"]) == ("timeout", "Sandbox.Timedout")
        assert record["durationMs"] >= 1000
        shutdown = [e["event"] for e in steps(log, "event") if e["event"]["eventType"] == "SHUTDOWN"]
        assert [s["shutdownReason"] for s in shutdown] == ["timeout"]
        # and the next invocation initialises again (new processes)
        second = emu.invoke({"n": 2})
        assert second.status == 200
        release(fifo)
        records = emu.wait_records(2)
        assert (records[1]["status"], records[1]["coldStart"]) == ("success", True)
        registrations = steps(log, "register")
        assert len(registrations) == 2
        assert registrations[0]["pid"] != registrations[1]["pid"]
        assert first.json()["pid"] != second.json()["pid"]
        assert emu.stop() == 0


def test_handler_running_past_the_timeout_gets_lambda_timeout_error(tmp_path: Path) -> None:
    # given a 1 s timeout and a handler that sleeps 5 s
    with Emulator(opt=tmp_path / "opt", handler="functions.sleep", timeout=1) as emu:
        # when it is invoked
        result = emu.invoke({"seconds": 5})
        # then the caller gets Sandbox.Timedout with Lambda's message
        assert result.status == 200
        assert result.headers["X-Amz-Function-Error"] == "Unhandled"
        body = result.json()
        assert body["errorType"] == "Sandbox.Timedout"
        assert body["errorMessage"] == (
            f"RequestId: {result.headers['X-Amzn-RequestId']} Error: Task timed out after 1.00 seconds")
        [record] = emu.wait_records(1)
        assert record["status"] == "timeout"


def test_environment_variables_and_paths_are_lambdas(tmp_path: Path) -> None:
    # given a function with its own variable and an extension that records its environment
    opt = tmp_path / "opt"
    log = tmp_path / "ext.jsonl"
    write_extension(opt, "observer", "probe_extension.py", "observer", "--log", str(log))
    with Emulator(opt=opt, handler="functions.environment", memory=512, timeout=7,
                  env={"MY_SETTING": "on"}, extra_args=["--no-limits"]) as emu:
        # when the function is invoked
        seen = emu.invoke({}).json()
        task = str(emu.task)
    # then the runtime sees Lambda's variables
    env = seen["env"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "function"
    assert env["_HANDLER"] == "functions.environment"
    assert env["LAMBDA_TASK_ROOT"] == task
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert env["AWS_LAMBDA_FUNCTION_TIMEOUT"] == "7"
    assert env["AWS_REGION"] == "us-east-1"
    assert env["AWS_LAMBDA_RUNTIME_API"] == emu.runtime_api
    assert env["MY_SETTING"] == "on"
    assert env["AFTERFLUSH_OPT_DIR"] == str(opt.resolve())
    assert seen["cwd"] == task
    # and the layer's python directories follow the task on the search path
    path = seen["path"]
    site = str(opt.resolve() / "python" / "lib" / "python3.11" / "site-packages")
    assert path.index(task) < path.index(site) < path.index(str(opt.resolve() / "python"))
    # and extensions get the same variables minus the runtime-only ones
    ext_env = steps(log, "register")[0]["env"]
    assert ext_env["MY_SETTING"] == "on"
    assert ext_env["AWS_LAMBDA_FUNCTION_NAME"] == "function"
    for name in ("_HANDLER", "LAMBDA_TASK_ROOT", "AWS_EXECUTION_ENV", "LAMBDA_RUNTIME_DIR"):
        assert name not in ext_env
        assert name in env


def test_exec_wrapper_receives_the_runtime_command(tmp_path: Path) -> None:
    # given a wrapper script in the layer, named by its /opt path as in Lambda
    opt = tmp_path / "opt"
    opt.mkdir()
    args_file = tmp_path / "wrapper-args.json"
    wrapper = opt / "wrapper"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$@\" > {args_file}\n"
        "export WRAPPED=yes\n"
        'exec "$@"\n')
    wrapper.chmod(0o755)
    with Emulator(opt=opt, handler="functions.environment",
                  env={"AWS_LAMBDA_EXEC_WRAPPER": "/opt/wrapper"}) as emu:
        # when the function is invoked
        seen = emu.invoke({}).json()
    # then the wrapper ran with the runtime command as its arguments, and exec'd it
    import sys

    assert args_file.read_text().splitlines() == [sys.executable, "-m", "awslambdaric", "functions.environment"]
    assert seen["env"]["WRAPPED"] == "yes"


def test_init_now_initialises_before_the_first_invocation(tmp_path: Path) -> None:
    # given an emulator started with --init-now
    with Emulator(opt=tmp_path / "opt", handler="functions.echo", init_now=True) as emu:
        # then init is done when it is ready
        [init] = emu.records("init")
        assert init["status"] == "success"
        # and the first invocation is not a cold start
        assert emu.invoke({}).status == 200
        [record] = emu.wait_records(1)
        assert record["coldStart"] is False
        assert record["initDurationMs"] is None


def test_idle_emulator_shuts_itself_down(tmp_path: Path) -> None:
    # given an emulator with --idle 0.5
    log = tmp_path / "ext.jsonl"
    write_extension(tmp_path / "opt", "observer", "probe_extension.py", "observer", "--log", str(log))
    emu = Emulator(opt=tmp_path / "opt", extra_args=["--idle", "0.5"])
    with emu:
        assert emu.invoke({}).status == 200
        # when nothing happens, then it shuts down by itself, exits 0, and spins extensions down
        assert emu.proc is not None
        assert emu.proc.wait(15) == 0
    shutdown = [e["event"] for e in steps(log, "event") if e["event"]["eventType"] == "SHUTDOWN"]
    assert [s["shutdownReason"] for s in shutdown] == ["spindown"]
    assert "idle for 0.5 s: shutting down" in emu.output.text


def test_report_lines_carry_every_field(tmp_path: Path) -> None:
    with Emulator(opt=tmp_path / "opt", handler="functions.echo") as emu:
        emu.invoke({})
        emu.invoke({})
        first, second = emu.wait_records(2)
    assert set(first) == {
        "time", "kind", "requestId", "status", "errorType", "coldStart", "initDurationMs",
        "callerLatencyMs", "runtimeDurationMs", "postRuntimeDurationMs", "durationMs",
        "billedDurationMs", "memorySizeMB", "maxMemoryUsedMB", "maxRssBytes"}
    assert first["coldStart"] is True and first["initDurationMs"] > 0
    assert second["coldStart"] is False and second["initDurationMs"] is None
    assert first["callerLatencyMs"] > first["initDurationMs"]
    assert second["billedDurationMs"] >= second["durationMs"]
    assert second["maxMemoryUsedMB"] == -(-second["maxRssBytes"] // (1024 * 1024))
    assert json.loads(json.dumps(second)) == second
