"""Fuzzing the collector YAML loader: broken syntax, mistyped values, unknown keys and unknown
components. The loader returns a config or raises ConfigError listing every problem, each one
line with its key path (and the file line when it has one); nothing else escapes. The
command line says the same in one block, without a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from collector._config import CollectorConfig, parse_config
from collector._registry import default_registry
from collector.errors import ConfigError
from tests.fixtures.collector import ROOT
from tests.fuzz.strategies import (
    FUZZ,
    TIMEOUT_SECONDS,
    VALID_CONFIG,
    broken_configs,
    yaml_documents,
)

pytestmark = pytest.mark.timeout(TIMEOUT_SECONDS)

ENV = {"API_KEY": "secret-value-never-shown"}
REGISTRY = default_registry()


def load(text: str) -> CollectorConfig | ConfigError:
    try:
        return parse_config(text, source="config.yaml", env=ENV, registry=REGISTRY)
    except ConfigError as exc:
        return exc


def check(outcome: CollectorConfig | ConfigError, text: str) -> None:
    if isinstance(outcome, CollectorConfig):
        assert outcome.pipelines, "a config without pipelines was accepted"
        return
    assert outcome.problems, "ConfigError without problems"
    for problem in outcome.problems:
        line = str(problem)
        assert line and "\n" not in line, line
        assert "Traceback" not in line, line
        # Header values are secrets (a value that came from the environment elsewhere, say a
        # misplaced API key in an endpoint, is the config's own text and may be quoted).
        if "headers" in problem.path:
            assert "secret-value-never-shown" not in line, line
        assert problem.line >= 0
        if problem.line:
            assert problem.file == "config.yaml"
            assert problem.line <= len(text.splitlines()) + 1, line


def test_the_shipped_example_config_loads():
    # The base every broken config below starts from is itself valid.
    assert isinstance(load(VALID_CONFIG), CollectorConfig)


@FUZZ
@given(text=broken_configs())
def test_broken_configs_load_or_list_every_problem_with_its_place(text):
    check(load(text), text)


@FUZZ
@given(document=yaml_documents)
def test_random_documents_with_config_words_load_or_list_every_problem(document):
    text = yaml.safe_dump(document, default_flow_style=False)
    check(load(text), text)


@FUZZ
@given(text=st.text(max_size=400))
def test_any_text_loads_or_lists_every_problem(text):
    check(load(text), text)


@pytest.mark.parametrize("text", [
    "receivers: [",
    "exporters:\n  kafka:\n    brokers: [x]\nservice:\n  pipelines:\n    traces:\n"
    "      receivers: [otlp]\n      exporters: [kafka]\n",
    "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 1\n"
    "exporters:\n  debug:\n    verbosity: 7\nservice:\n  pipelines:\n    traces:\n"
    "      receivers: [otlp]\n      exporters: [debug]\n",
    "a: &a [*a]\n",
    "\t- tab\n",
    "x: !!python/object/apply:os.system ['true']\n",
], ids=["unclosed", "unknown-component", "mistyped", "alias-loop", "tab", "python-tag"])
def test_validate_prints_problems_in_one_block_without_a_traceback(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "collector", "validate", "--config", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    lines = done.stderr.splitlines()
    assert lines[0].startswith("[afterflush collector] ERROR invalid config (")
    assert all(line.startswith("  ") for line in lines[1:]), output
    assert len(lines) - 1 == int(lines[0].split("(")[1].split(" ")[0])
