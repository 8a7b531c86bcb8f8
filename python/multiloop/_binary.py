"""Finding the ``supervisor`` binary the driver runs."""

from __future__ import annotations

import os
import shutil
import sys


def find_supervisor() -> str:
    """``MULTILOOP_SUPERVISOR``, else ``supervisor`` next to this Python (a
    venv's bin/), else ``supervisor`` on PATH."""
    explicit = os.environ.get("MULTILOOP_SUPERVISOR")
    if explicit:
        return explicit
    beside = os.path.join(os.path.dirname(sys.executable), "supervisor")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("supervisor")
    if found:
        return found
    raise FileNotFoundError(
        "no supervisor binary: not next to "
        f"{sys.executable} nor on PATH (pip install multiloop, or set MULTILOOP_SUPERVISOR)"
    )
