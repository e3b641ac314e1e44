"""The emulator asks the runtime's interpreter for its version instead of guessing from a name."""

from __future__ import annotations

import os
import sys

from emulator._config import python_version


def test_python_version_of_an_interpreter_named_python3_is_its_minor_version(tmp_path):
    link = tmp_path / "python3"
    os.symlink(sys.executable, link)

    assert python_version(str(link)) == f"{sys.version_info.major}.{sys.version_info.minor}"
