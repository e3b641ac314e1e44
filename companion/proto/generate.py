"""Generates control_pb2*.py here from ../../collector/proto/control.proto.

Usage: python -m companion.proto.generate [--out DIR]

The .proto is compiled under its repository path, collector/proto/control.proto (the Go
collector's controlpb is generated from the same file), so that the descriptors keep that file
name. protoc writes its output under that path; the modules are moved into the output
directory, and the grpc module imports the pb2 module of its own package.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PROTO = (HERE / ".." / ".." / "collector" / "proto" / "control.proto").resolve()
GENERATED = ("control_pb2.py", "control_pb2.pyi", "control_pb2_grpc.py")
# The grpc module's import of the pb2 module as protoc writes it (the package and the alias
# come from the .proto's path: for collector/proto/control.proto, control_pb2 out of the
# package collector.proto, as collector_dot_proto_dot_control__pb2), and as it is committed
# here.
GRPC_MODULE = "control_pb2_grpc.py"
_PB2_PATH = PROTO.relative_to(ROOT).with_suffix("").as_posix() + "_pb2"
_PB2_PACKAGE, _, _PB2_MODULE = _PB2_PATH.replace("/", ".").rpartition(".")
_PB2_ALIAS = _PB2_PATH.replace("_", "__").replace("/", "_dot_")
PB2_IMPORT = f"from {_PB2_PACKAGE} import {_PB2_MODULE} as {_PB2_ALIAS}\n"
PB2_IMPORT_HERE = f"from . import {_PB2_MODULE} as {_PB2_ALIAS}\n"


def generate(out_dir: Path) -> None:
    """Writes the generated modules into out_dir."""
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("grpcio-tools is needed to generate code: pip install grpcio-tools") from exc
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    proto = PROTO.relative_to(ROOT).as_posix()
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            proto,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        written = Path(tmp) / Path(proto).parent
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in GENERATED:
            text = (written / name).read_text()
            if name == GRPC_MODULE:
                if PB2_IMPORT not in text:
                    raise SystemExit(f"{name}: protoc no longer writes {PB2_IMPORT.strip()!r}")
                text = text.replace(PB2_IMPORT, PB2_IMPORT_HERE)
            (out_dir / name).write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE)
    generate(parser.parse_args(argv).out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
