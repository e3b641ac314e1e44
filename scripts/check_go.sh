#!/usr/bin/env bash
# Says what to install when Go is missing or older than the collector needs.
set -euo pipefail
need="${1:-1.26}"
if ! command -v go >/dev/null 2>&1; then
    echo "error: Go $need or newer is needed to build the collector: install it (https://go.dev/doc/install, or your package manager's golang package) and put 'go' on PATH" >&2
    exit 1
fi
have="$(go env GOVERSION | sed 's/^go//')"
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
    echo "error: Go $need or newer is needed to build the collector; 'go' on PATH is $have: install a newer Go" >&2
    exit 1
fi
