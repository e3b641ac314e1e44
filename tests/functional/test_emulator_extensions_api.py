"""The emulator's Extensions, Telemetry and Logs APIs: Lambda's rules, status codes and error
types, and telemetry delivery to listeners inside the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fixtures.emulator import Emulator, read_jsonl, wait_until, write_extension


def answers(log: Path) -> dict[str, dict[str, Any]]:
    return {e["check"]: e for e in read_jsonl(log)}


def test_extensions_and_telemetry_api_answer_with_lambdas_status_codes_and_error_types(tmp_path: Path) -> None:
    # given an extension that tries the APIs' rules during init
    opt = tmp_path / "opt"
    log = tmp_path / "api.jsonl"
    write_extension(opt, "api-probe", "api_probe.py", "api-probe", str(log))
    with Emulator(opt=opt, handler="functions.echo") as emu:
        # when the environment initialises
        assert emu.invoke({}).status == 200
        got = answers(log)

    def refused(check: str) -> tuple[int, str, str]:
        return got[check]["status"], got[check]["body"]["errorType"], got[check]["body"]["errorMessage"]

    # then registration follows the Extensions API
    assert refused("register-no-name") == (403, "Extension.InvalidExtensionName", "Empty extension name")
    assert refused("register-bad-event") == (403, "Extension.InvalidEventType", "FOO: ErrorInvalidEventType")
    assert refused("register-bad-body")[:2] == (403, "InvalidRequestFormat")
    assert got["register"]["status"] == 200
    assert got["register"]["body"] == {"functionName": "function", "functionVersion": "$LATEST",
                                       "handler": "functions.echo", "accountId": "123456789012"}
    assert refused("register-again") == (403, "Extension.InvalidExtensionState",
                                         "Extension with this name already registered")
    # and every later call needs a known identifier
    assert refused("next-no-id") == (403, "Extension.MissingExtensionIdentifier",
                                     "Missing Lambda-Extension-Identifier header")
    assert refused("next-bad-id") == (403, "Extension.InvalidExtensionIdentifier",
                                      "Invalid Lambda-Extension-Identifier")
    assert refused("next-unknown-id") == (403, "Extension.UnknownExtensionIdentifier",
                                          "Unknown extension 00000000-0000-4000-8000-000000000000")
    assert refused("subscribe-no-id")[:2] == (403, "Extension.MissingExtensionIdentifier")
    assert refused("init-error-no-type") == (403, "Extension.MissingHeader",
                                             "Missing Lambda-Extension-Function-Error-Type header")
    # and subscriptions are validated as the Telemetry API does
    for check, fragment in [
        ("subscribe-bad-version", "schemaVersion must be one of 2022-07-01, 2022-12-13, 2025-01-29"),
        ("subscribe-no-types", "types should not be empty"),
        ("subscribe-bad-type", "types may only contain platform, function and extension"),
        ("subscribe-small-timeout", "buffering.timeoutMs must be between 25 and 30000, got 10"),
        ("subscribe-few-items", "buffering.maxItems must be between 1000 and 10000, got 10"),
        ("subscribe-tcp", "destination.protocol must be HTTP, got 'TCP'"),
        ("subscribe-outside", "destination host 'example.com' is not inside the execution environment"),
        ("subscribe-no-port", "URI port is not provided"),
    ]:
        status, error_type, message = refused(check)
        assert (status, error_type) == (400, "ValidationError"), check
        assert fragment in message, (check, message)
    assert (got["subscribe"]["status"], got["subscribe"]["body"]) == (200, "OK")
    # and the Logs API says clearly that it is not there
    status, error_type, message = refused("logs")
    assert (status, error_type) == (400, "Logs.NotSupported")
    assert "Telemetry API (2022-07-01)" in message


def test_registration_after_init_is_refused(tmp_path: Path) -> None:
    # given a handler that tries to register an extension
    with Emulator(opt=tmp_path / "opt", handler="functions.register_late") as emu:
        # when it runs (after init)
        seen = emu.invoke({}).json()
    # then Lambda's answer comes back
    assert seen == {"status": 403, "body": {"errorMessage": "Extension registration closed already",
                                            "errorType": "Extension.RegistrationClosed"}}


def test_internal_extension_asking_for_shutdown_is_refused(tmp_path: Path) -> None:
    # given a function module that registers internal extensions while it initialises
    with Emulator(opt=tmp_path / "opt", handler="internal_ext.handler") as emu:
        # when it is invoked twice
        first = emu.invoke({}).json()
        second = emu.invoke({}).json()
    # then the one asking for SHUTDOWN was refused and the INVOKE-only one was accepted
    assert first["refused"] == {"status": 403, "body": {
        "errorMessage": "SHUTDOWN: ShutdownEventNotSupportedForInternalExtension",
        "errorType": "Extension.InvalidEventType"}}
    assert first["accepted"]["status"] == 200
    # and the accepted one receives INVOKE events
    assert "INVOKE" in second["seen"]


def test_subscribing_after_init_is_refused(tmp_path: Path) -> None:
    with Emulator(opt=tmp_path / "opt", handler="late_subscriber.handler") as emu:
        seen = emu.invoke({}).json()
    assert seen == {"status": 403, "body": {"errorMessage": "Telemetry API subscription is closed",
                                            "errorType": "Telemetry.SubscriptionClosed"}}


def test_eleventh_extension_is_refused_and_fails_init(tmp_path: Path) -> None:
    # given eleven external extensions
    opt = tmp_path / "opt"
    logs = []
    for i in range(11):
        logs.append(tmp_path / f"ext{i:02d}.jsonl")
        write_extension(opt, f"ext{i:02d}", "probe_extension.py", f"ext{i:02d}", "--log", str(logs[-1]))
    with Emulator(opt=opt, handler="functions.echo") as emu:
        # when the environment initialises
        result = emu.invoke({})
    # then ten registered and one got TooManyExtensions
    statuses = [read_jsonl(log)[0]["status"] for log in logs]
    assert sorted(statuses) == [200] * 10 + [403]
    refused = next(read_jsonl(log)[0] for log in logs if read_jsonl(log)[0]["status"] == 403)
    assert refused["body"] == {"errorMessage": "Extension limit (10) reached",
                               "errorType": "Extension.TooManyExtensions"}
    # and the extension that exited made init fail
    assert result.json()["errorType"] == "Extension.Crash"


def test_telemetry_is_retried_until_the_listener_is_up(tmp_path: Path) -> None:
    # given an extension that subscribes but starts its listener only at the first INVOKE
    opt = tmp_path / "opt"
    log = tmp_path / "ext.jsonl"
    write_extension(opt, "late", "probe_extension.py", "late", "--log", str(log), "--subscribe",
                    "--listener-late", "--wait-for", "platform.initStart")
    with Emulator(opt=opt, handler="functions.echo") as emu:
        # when the function is invoked
        assert emu.invoke({}).status == 200
        # then the first delivery failed and the init events arrived later all the same
        emu.output.wait_for(r"telemetry: delivery to late failed \(ClientConnectorError\); retrying")
        wait_until(lambda: [e for e in read_jsonl(log)
                            if e.get("telemetry", {}).get("type") == "platform.initStart"],
                   what="platform.initStart")
        types = [e["telemetry"]["type"] for e in read_jsonl(log) if "telemetry" in e]
        assert types.count("platform.initStart") == 1
        assert types.count("platform.telemetrySubscription") == 1


def test_subscriber_gets_extension_and_subscription_events(tmp_path: Path) -> None:
    # given a subscribing extension and one that only registers
    opt = tmp_path / "opt"
    log = tmp_path / "sub.jsonl"
    write_extension(opt, "a-subscriber", "probe_extension.py", "a-subscriber", "--log", str(log), "--subscribe",
                    "--wait-for", "platform.start")
    write_extension(opt, "b-plain", "probe_extension.py", "b-plain", "--events", "INVOKE")
    with Emulator(opt=opt, handler="functions.echo") as emu:
        assert emu.invoke({}).status == 200
        wait_until(lambda: [e for e in read_jsonl(log)
                            if e.get("telemetry", {}).get("type") == "platform.initReport"],
                   what="platform.initReport")
        records = [e["telemetry"]["record"] for e in read_jsonl(log)
                   if e.get("telemetry", {}).get("type") in ("platform.extension",
                                                             "platform.telemetrySubscription")]
    # then both extensions' readiness and the subscription were reported
    assert {"name": "a-subscriber", "state": "Subscribed", "types": ["extension", "function", "platform"]} in records
    assert {"name": "a-subscriber", "state": "Ready", "events": ["INVOKE", "SHUTDOWN"]} in records
    assert {"name": "b-plain", "state": "Ready", "events": ["INVOKE"]} in records
