# afterflush: every target sets up what it needs, starting from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test lint proto run layer bench chaos clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

test: venv
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check .
	$(PY) -m mypy collector companion emulator backend

# Regenerates the committed control-service code from collector/proto.
proto: venv
	$(PY) -m collector.proto.generate

clean:
	rm -rf $(VENV) dist .pytest_cache .mypy_cache .ruff_cache
