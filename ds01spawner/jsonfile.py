"""JSON files that readers in other processes see whole: written to a temporary file in the
same folder, then renamed over the old one (the culler's state, the simulated GPUs' state, the
published GPU queue)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def write_json_atomically(path: str, data: Any, indent: int = 1, fsync: bool = False) -> None:
    """Replace ``path`` with ``data`` as JSON; readers see the old or the new file, never a
    mix. The file is readable by everyone (mode 0644); no temporary file is left behind."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=indent)
            f.write("\n")
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
