"""JSON files that readers in other processes see whole: written to a temporary file in the
same folder, then renamed over the old one (the culler's state, the simulated GPUs' state, the
published GPU queue)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def write_text_atomically(
    path: str, text: str, mode: int | None = 0o644, fsync: bool = False
) -> None:
    """Replace ``path`` with ``text``; readers see the old or the new file, never a mix, and no
    temporary file is left behind. ``mode``: the new file's mode (None: keep the old file's,
    0644 when there is none); ``fsync``: flush to disk before the rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json_atomically(path: str, data: Any, indent: int = 1, fsync: bool = False) -> None:
    """Replace ``path`` with ``data`` as JSON (mode 0644), atomically as
    :func:`write_text_atomically`."""
    write_text_atomically(path, json.dumps(data, indent=indent) + "\n", fsync=fsync)
