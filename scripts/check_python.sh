#!/usr/bin/env bash
# Says what to install when the Python that makes .venv is missing or older than 3.11.
set -euo pipefail
python="${1:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "error: Python 3.11 or newer is needed ('$python' is not on PATH): install python3.11 (or newer) with venv support, or run make PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    echo "error: Python 3.11 or newer is needed; '$python' is $("$python" -c 'import platform; print(platform.python_version())'): install a newer one, or run make PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "error: '$python' has no venv/ensurepip module: install its venv package (Debian: python3-venv)" >&2
    exit 1
fi
