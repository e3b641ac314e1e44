# afterflush: every target sets up what it needs, starting from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv collector test test-go lint proto run layer bench chaos clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || { scripts/check_python.sh $(PYTHON) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# The collector (Go): bin/afterflush-collector for this machine. GOPROXY is the proxy alone,
# so that a module it does not serve is an error naming the module and version, not a git
# fallback that cannot be reached.
COLLECTOR := bin/afterflush-collector
COLLECTOR_SOURCES := $(shell find collector -name '*.go' -not -path '*/testdata/*') collector/go.mod collector/go.sum
comma := ,
GOPROXY_FIRST := $(firstword $(subst $(comma), ,$(shell go env GOPROXY 2>/dev/null)))
GO_ENV := GOPROXY=$(or $(GOPROXY_FIRST),https://proxy.golang.org)

collector: $(COLLECTOR)

$(COLLECTOR): $(COLLECTOR_SOURCES)
	@scripts/check_go.sh 1.26
	cd collector && $(GO_ENV) CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o ../$(COLLECTOR) .

test-go:
	@scripts/check_go.sh 1.26
	cd collector && $(GO_ENV) go vet ./... && $(GO_ENV) go test -race ./...

test: venv collector test-go
	$(PY) -m pytest -q -m "not chaos"

lint: venv
	$(PY) -m ruff check .
	$(PY) -m mypy companion emulator backend bench

# dist/afterflush-python-x86_64.zip and -arm64.zip for Python 3.11-3.14: the companion and the
# SDK with their pinned wheels, and the collector cross-compiled for each architecture (needs
# Go 1.26; the script checks). Wheels, collector binaries and zips are cached in .layer-build/
# (the same script runs in Dockerfile.layer).
layer: venv
	$(PY) scripts/build_layer.py

# The sample function with the layer under the emulator, against a backend that answers after
# 200 ms: afterflush vs. a synchronous pipeline. Flags: make run RUN_ARGS="--latency-ms 500".
run: venv
	$(PY) -m scripts.run_demo $(RUN_ARGS)

# The benchmark (bench/README.md) against this machine's layer zip, built first when its inputs
# changed: writes bench/results/latest.json, latest.md, latency.png. Under 20 minutes;
# make bench BENCH_ARGS=--quick for a ~3 minute run.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) scripts/build_layer.py --arch host
	$(PY) -m bench $(BENCH_ARGS)

# The long fault scenarios (tests marked chaos) and the fuzz targets with many more examples;
# prints the ledger of each scenario. make chaos CHAOS_ARGS="-k load" FUZZ_EXAMPLES=5000.
FUZZ_EXAMPLES ?= 1000
chaos: venv collector
	AFTERFLUSH_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) AFTERFLUSH_FUZZ_RANDOM=1 \
		$(PY) -m pytest -q -rxX -m "chaos" tests/chaos $(CHAOS_ARGS)
	AFTERFLUSH_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) AFTERFLUSH_FUZZ_RANDOM=1 \
		$(PY) -m pytest -q -rxX tests/fuzz $(CHAOS_ARGS)

# Regenerates the committed control-service code from collector/proto/control.proto: the
# companion's (companion/proto) and the collector's (collector/internal/controlpb), the Go
# plugins pinned and installed into bin/.
CONTROLPB := github.com/afterflush/afterflush/collector/internal/controlpb
proto: venv
	$(PY) -m companion.proto.generate
	cd collector && GOBIN=$(CURDIR)/bin $(GO_ENV) go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.10
	cd collector && GOBIN=$(CURDIR)/bin $(GO_ENV) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
	PATH=$(CURDIR)/bin:$$PATH $(PY) -m grpc_tools.protoc -Icollector/proto \
		--go_out=collector/internal/controlpb --go_opt=paths=source_relative --go_opt=Mcontrol.proto=$(CONTROLPB) \
		--go-grpc_out=collector/internal/controlpb --go-grpc_opt=paths=source_relative --go-grpc_opt=Mcontrol.proto=$(CONTROLPB) \
		control.proto

clean:
	rm -rf $(VENV) bin dist .pytest_cache .mypy_cache .ruff_cache
