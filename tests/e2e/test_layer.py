"""The built layer, end to end: the zip for this machine unpacked into a temporary directory
and used as the emulator's /opt, with the sample function (examples/function) under the real
awslambdaric, the function's and the extension's Python a bare interpreter, and nothing of the
repository on any path. The test backend answers every export after 200 ms.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.layer import (
    ADOT_CONFIG,
    REPO,
    SIGNALS,
    LambdaRuntime,
    build_zips,
    host_arch,
    lambda_runtime,
    layer_deployment,
    mapped_files,
    processes_of,
    unpack,
)

BACKEND_LATENCY = ("--latency-ms", "200")
INVOCATIONS = 3
ITEMS = 2


@pytest.fixture(scope="module")
def opt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    arch = host_arch()
    zips = build_zips(tmp_path_factory.mktemp("zip"), [arch])
    return unpack(zips[arch], tmp_path_factory.mktemp("opt"))


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> LambdaRuntime:
    return lambda_runtime(tmp_path_factory.mktemp("runtime"))


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"], ids=["http", "grpc"])
def test_unpacked_layer_alone_delivers_every_signal_after_each_response(
    opt, runtime, monkeypatch, protocol
):
    # Given the function's SDK exporting to the local collector over `protocol`
    with layer_deployment(
        opt, runtime, monkeypatch=monkeypatch, backend_args=BACKEND_LATENCY, protocol=protocol
    ) as dep:
        answers = []
        for _ in range(INVOCATIONS):
            # When the function is invoked on an idle environment
            result, responded_at = dep.invoke_when_idle({"items": ITEMS})
            assert result.status == 200, result.body
            answers.append((result.json(), responded_at))
        records = dep.emulator.wait_records(INVOCATIONS)

        # Then the runtime and the collector run from the unpacked layer only: the collector is
        # the layer's (static) binary, the function's Python loads its extensions from the layer
        procs = processes_of(dep.control_endpoint)
        assert set(procs) == {"runtime", "collector"}
        assert procs["collector"].exe() == str(opt / "afterflush" / "bin" / "afterflush-collector")
        for name, proc in procs.items():
            files = mapped_files(proc)
            assert not [f for f in files if f.startswith(str(REPO))], name
            paths = proc.environ().get("PYTHONPATH", "").split(":")
            assert not [p for p in paths if p.startswith(str(REPO))], name
        runtime_files = mapped_files(procs["runtime"])
        assert [f for f in runtime_files if f.startswith(str(opt)) and f.endswith(".so")]
        # And grpcio, stored once under python/lib, serves the function's gRPC exporter when it
        # is chosen
        grpc_so = str(opt / "python" / "lib")
        function_grpc = [f for f in runtime_files if f.startswith(grpc_so) and "cygrpc" in f]
        assert bool(function_grpc) == (protocol == "grpc")

        for (body, responded_at), record in zip(answers, records, strict=True):
            rid = body["requestId"]
            assert (record["requestId"], record["status"]) == (rid, "success")
            # And each invocation's spans and log record arrived, once, after its response
            mine = dep.invocation_items(rid)
            assert {s: len(mine[s]) for s in ("traces", "logs")} == {
                "traces": body["produced"]["traces"], "logs": body["produced"]["logs"],
            }
            assert responded_at <= min(item["received"] for s in mine for item in mine[s])
            # And the backend's 200 ms were spent after the response, before the freeze
            assert record["postRuntimeDurationMs"] >= 200
        # And everything the function produced was delivered, nothing twice
        produced = {s: sum(body["produced"][s] for body, _ in answers) for s in SIGNALS}
        stats = dep.stats()
        assert {s: stats[s]["unique"] for s in SIGNALS} == produced
        assert {s: stats[s]["duplicates"] for s in SIGNALS} == dict.fromkeys(SIGNALS, 0)
        assert dep.emulator.stop() == 0
        # And the companion said nothing but its ready and shutdown lines
        ours = [line.split("] ", 1)[1].split(" ")[:2] for line in dep.lines("[afterflush] ")]
        assert ours == [["INFO", "ready"], ["INFO", "shutdown"]]


def test_a_config_written_for_the_adot_collector_runs_unchanged_with_flushcontrol_added(
    opt, runtime, monkeypatch
):
    # Given the ADOT collector's kind of config: batch processor, logging, debug, otlphttp and
    # otlp exporters, no flushcontrol (only its endpoints point at this test's ports)
    with layer_deployment(
        opt, runtime, monkeypatch=monkeypatch, config=ADOT_CONFIG, backend_args=BACKEND_LATENCY
    ) as dep:
        bodies = [dep.invoke_when_idle({"items": ITEMS})[0].json() for _ in range(2)]
        records = dep.emulator.wait_records(2)
        # Then the collector said what it changed (flushcontrol added, batch taken out since
        # flushcontrol coalesces what a drain sends, logging run as debug), and was ready
        [added] = dep.lines("[afterflush collector] WARNING flushcontrol added to pipelines: ")
        assert added.endswith("logs, metrics, traces")
        [batch] = dep.lines("[afterflush collector] WARNING batch taken out of pipelines ")
        assert "logs, metrics, traces" in batch
        assert dep.lines("[afterflush collector] WARNING the logging exporter is the debug "
                         "exporter now")
        assert len(dep.lines("[afterflush collector] INFO ready in ")) == 1
        # And every invocation's data reached the backend after its response
        assert [r["postRuntimeDurationMs"] >= 200 for r in records] == [True, True]
        for body in bodies:
            mine = dep.invocation_items(body["requestId"])
            assert {s: len(mine[s]) for s in mine} == {
                "traces": body["produced"]["traces"], "logs": body["produced"]["logs"],
            }
        stats = dep.stats()
        assert stats["metrics"]["unique"] == sum(b["produced"]["metrics"] for b in bodies)
        assert dep.emulator.stop() == 0
