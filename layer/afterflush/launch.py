"""Runs the afterflush companion with the layer's packages for this interpreter's Python version
on the import path, and nothing of the function's. Started by extensions/afterflush; stdlib only.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import MutableMapping, Sequence

CONFIG_URI_ENV = "OPENTELEMETRY_COLLECTOR_CONFIG_URI"
CONFIG_FILE_ENV = "OPENTELEMETRY_COLLECTOR_CONFIG_FILE"
# Where Lambda unpacks layers; the collector's own default config path is under it.
LAMBDA_OPT = "/opt"
PREFIX = "[afterflush]"


def layer_root() -> str:
    # abspath, not realpath: a layer reached through a symlinked /opt is still "at /opt".
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def available_versions(layer: str) -> list[str]:
    lib = os.path.join(layer, "afterflush", "lib")
    try:
        names = os.listdir(lib)
    except OSError:
        return []
    found = [n.removeprefix("python") for n in names if n.startswith("python3.")]
    return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()))


def import_path(layer: str, version: str) -> list[str] | None:
    """Our compiled packages for `version`, our pure-Python ones, then the compiled packages the
    function side shares with us (grpcio is stored once, under python/lib). None when the layer
    has nothing for `version`."""
    ours = os.path.join(layer, "afterflush", "lib")
    paths = [
        os.path.join(ours, f"python{version}"),
        os.path.join(ours, "common"),
        os.path.join(layer, "python", "lib", f"python{version}", "site-packages"),
    ]
    return paths if all(os.path.isdir(p) for p in paths) else None


def child_environment(env: MutableMapping[str, str], layer: str, paths: Sequence[str]) -> None:
    """What the collector (started by the companion with this interpreter) inherits: our path
    only, and no PYTHON* setting of the function's that could change how it imports or runs."""
    for name in [n for n in env if n.startswith("PYTHON")]:
        del env[name]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONNOUSERSITE"] = "1"
    # `python -m collector` would otherwise put the working directory (the function's code)
    # first on its path.
    env["PYTHONSAFEPATH"] = "1"
    if layer != LAMBDA_OPT and not env.get(CONFIG_URI_ENV) and not env.get(CONFIG_FILE_ENV):
        env[CONFIG_URI_ENV] = os.path.join(layer, "collector-config", "config.yaml")


def main(argv: Sequence[str]) -> int:
    layer = layer_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    paths = import_path(layer, version)
    if paths is None:
        have = ", ".join(available_versions(layer)) or "none"
        print(
            f"{PREFIX} this layer has no packages for Python {version} (it has {have}); "
            "the afterflush extension is not running",
            file=sys.stderr,
            flush=True,
        )
        return 0
    child_environment(os.environ, layer, paths)
    sys.path[:0] = paths
    sys.argv = ["companion", *argv]
    runpy.run_module("companion", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
