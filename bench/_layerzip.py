"""The layer zips' sizes: the one under test, and the ones in dist/ for each architecture when
they are there. Zipped is the file's size, unzipped the sum of its entries' sizes (file_size, as
Lambda counts a layer unpacked); the collector binary's own sizes beside them.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

from bench._deploy import COLLECTOR_IN_LAYER, REPO
from bench._errors import BenchError

ARCHITECTURES = ("x86_64", "arm64")
# ELF e_machine (bytes 18-19, little-endian) of the collector binary: which architecture a zip
# is for, whatever it is called.
ELF_MACHINES = {62: "x86_64", 183: "arm64"}
ZIP_NAME = re.compile(r"afterflush-python-(?P<arch>[A-Za-z0-9_]+)\.zip$")


def dist_zip(arch: str) -> Path:
    return REPO / "dist" / f"afterflush-python-{arch}.zip"


def _arch(archive: zipfile.ZipFile, name: str) -> str | None:
    try:
        with archive.open(COLLECTOR_IN_LAYER) as binary:
            header = binary.read(20)
    except KeyError:
        header = b""
    if len(header) == 20 and header[:4] == b"\x7fELF":
        machine = ELF_MACHINES.get(int.from_bytes(header[18:20], "little"))
        if machine is not None:
            return machine
    match = ZIP_NAME.search(name)
    return match["arch"] if match else None


def measure(path: Path, *, tested: bool) -> dict[str, Any]:
    """One zip's sizes in bytes: the file, its entries unpacked, the collector binary in it
    (unpacked and compressed; None when it has none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            files = [info for info in archive.infolist() if not info.is_dir()]
            collector = next((i for i in files if i.filename == COLLECTOR_IN_LAYER), None)
            arch = _arch(archive, path.name)
    except (OSError, zipfile.BadZipFile) as exc:
        raise BenchError(f"cannot read {path}: {exc}") from exc
    return {
        "name": path.name,
        "arch": arch,
        "tested": tested,
        "files": len(files),
        "zipped_bytes": path.stat().st_size,
        "unzipped_bytes": sum(info.file_size for info in files),
        "collector_bytes": None if collector is None else collector.file_size,
        "collector_zipped_bytes": None if collector is None else collector.compress_size,
    }


def measure_zips(tested: Path) -> list[dict[str, Any]]:
    """The zip under test first, then each architecture's in dist/ that is another file."""
    found = [measure(tested, tested=True)]
    for arch in ARCHITECTURES:
        path = dist_zip(arch)
        if path.is_file() and path.resolve() != tested.resolve():
            found.append(measure(path, tested=False))
    return found
