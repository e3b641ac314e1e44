"""The synchronous mode's extension: the layer's companion exactly as its own launcher runs it,
except that the collector it starts runs `--no-hold` (no flushcontrol: the ADOT way).

Copied by the benchmark into a view of the layer as bench/sync_launch.py; stdlib only.
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys
from typing import Any


def main(argv: list[str]) -> int:
    layer = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(layer, "afterflush"))
    import launch  # type: ignore[import-not-found]

    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    paths = launch.import_path(layer, version)
    if paths is None:
        print(f"[bench] the layer has no packages for Python {version}", file=sys.stderr)
        return 0
    sys.path.remove(os.path.join(layer, "afterflush"))
    launch.child_environment(os.environ, layer, paths)
    sys.path[:0] = paths
    # The companion has no setting for this; its module-level factory is swapped instead.
    companion_main: Any = importlib.import_module("companion._main")

    plain = companion_main.collector_command
    companion_main.collector_command = lambda: [*plain(), "--no-hold"]
    sys.argv = ["companion", *argv]
    runpy.run_module("companion", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
