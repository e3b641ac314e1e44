"""Runs the afterflush companion with the layer's packages for this interpreter's Python version
on the import path, and nothing of the function's. Started by extensions/afterflush; stdlib only.
The companion starts the collector, the static binary afterflush/bin/afterflush-collector
beside afterflush/lib, which inherits this environment.
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


def compiled_dir(layer: str, version: str) -> str:
    """The compiled packages for `version`: the function side's, where the companion's grpcio
    is stored too. Its presence is what says the layer has packages for `version`."""
    return os.path.join(layer, "python", "lib", f"python{version}", "site-packages")


def available_versions(layer: str) -> list[str]:
    lib = os.path.join(layer, "python", "lib")
    try:
        names = os.listdir(lib)
    except OSError:
        return []
    found = [
        n.removeprefix("python") for n in names
        if n.startswith("python3.") and os.path.isdir(compiled_dir(layer, n.removeprefix("python")))
    ]
    return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()))


def import_path(layer: str, version: str) -> list[str] | None:
    """Our own compiled packages for `version` (afterflush/lib/python3.X, only when the
    companion has some the function side does not), our pure-Python ones, then the compiled
    packages the function side shares with us (grpcio is stored once, under python/lib). None
    when the layer has nothing for `version`."""
    ours = os.path.join(layer, "afterflush", "lib")
    common = os.path.join(ours, "common")
    shared = compiled_dir(layer, version)
    if not (os.path.isdir(common) and os.path.isdir(shared)):
        return None
    own = os.path.join(ours, f"python{version}")
    return [*([own] if os.path.isdir(own) else []), common, shared]


def collector_environment(env: MutableMapping[str, str], layer: str) -> None:
    """What the collector (started by the companion) inherits: the function's environment, with
    the layer's config as the default when the layer is not at /opt (the collector's built-in
    default is /opt/collector-config/config.yaml) and the function chose no config."""
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
    collector_environment(os.environ, layer)
    # The interpreter runs isolated (-I, from extensions/afterflush): PYTHON* settings, the user
    # site and the working directory are already off its path; these are all it imports from.
    sys.path[:0] = paths
    sys.argv = ["companion", *argv]
    runpy.run_module("companion", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
