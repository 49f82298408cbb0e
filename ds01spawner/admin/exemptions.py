"""Grant a time-limited exemption by editing the limits file as text (its comments and layout
stay), then parsing the result with limits.py before replacing the file atomically: a result
that does not parse is refused and the file is left as it was."""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from ..jsonfile import write_text_atomically
from ..limits.model import KEYS, LimitsError, parse_limits


class ExemptionError(ValueError):
    """The exemption cannot be granted (bad input, or the file would not parse)."""


_TOP_KEY = re.compile(r"^exemptions:[ \t]*(?P<value>[^#\n]*?)[ \t]*(#.*)?$", re.M)
_EMPTY_VALUES = ("", "[]", "~", "null", "Null", "NULL")


def _check(user: str, lifts: list[str], reason: str, expires: date, today: date) -> None:
    if not user or not user.strip():
        raise ExemptionError("Name the user.")
    if any(c in s for s in (user, reason) for c in "\r\n\0"):
        raise ExemptionError("User and reason must be one line each.")
    if not reason.strip():
        raise ExemptionError("Give the reason (it is kept in the limits file).")
    if not lifts:
        raise ExemptionError("Choose at least one limit to lift, or all.")
    bad = [k for k in lifts if k != "all" and k not in KEYS]
    if bad:
        raise ExemptionError(f"Not a limit: {', '.join(bad)}.")
    if expires < today:
        raise ExemptionError(f"The last day {expires.isoformat()} is in the past.")


def exemption_item(
    user: str, lifts: list[str], reason: str, expires: date, granted_by: str, indent: str = "  "
) -> str:
    """The YAML list item (JSON strings are YAML double-quoted scalars)."""
    shown = "all" if "all" in lifts else "[" + ", ".join(dict.fromkeys(lifts)) + "]"
    pad = indent + "  "
    return (
        f"{indent}- user: {json.dumps(user)}\n"
        f"{pad}lifts: {shown}\n"
        f"{pad}reason: {json.dumps(reason)}\n"
        f"{pad}expires: {expires.isoformat()}\n"
        f"{pad}granted_by: {json.dumps(granted_by)}\n"
    )


def add_exemption(
    text: str,
    user: str,
    lifts: list[str],
    reason: str,
    expires: date,
    granted_by: str,
    today: date,
    source: str = "limits file",
) -> str:
    """The limits file's text with one more exemption; ExemptionError when it cannot be."""
    _check(user, lifts, reason, expires, today)
    if text and not text.endswith("\n"):
        text += "\n"
    m = _TOP_KEY.search(text)
    if m is None:
        new = text + "\nexemptions:\n" + exemption_item(user, lifts, reason, expires, granted_by)
    elif m.group("value").strip() in _EMPTY_VALUES:
        lines = text[m.end() :].split("\n")
        block_end = m.end()
        indent = "  "
        offset = m.end()
        # the block: following lines that are blank, comments, or indented
        for line in lines[1:]:
            offset += len(line) + 1
            if line.strip() and not line.startswith((" ", "\t", "#")):
                break
            if line.strip() and not line.lstrip().startswith("#"):
                block_end = offset
                if line.lstrip().startswith("- ") and indent == "  ":
                    indent = line[: len(line) - len(line.lstrip())]
        if m.group("value").strip() in ("[]", "~", "null", "Null", "NULL"):
            head = text[: m.start()] + "exemptions:" + (f"  {m.group(2)}" if m.group(2) else "")
            rest = text[m.end() :]
            new = head + rest[: rest.index("\n") + 1] if "\n" in rest else head + "\n"
            new += exemption_item(user, lifts, reason, expires, granted_by)
            new += rest[rest.index("\n") + 1 :] if "\n" in rest else ""
        else:
            item = exemption_item(user, lifts, reason, expires, granted_by, indent)
            insert_at = block_end + 1 if block_end > m.end() else m.end() + 1
            insert_at = min(insert_at, len(text))
            new = text[:insert_at] + item + text[insert_at:]
    else:
        raise ExemptionError(
            "The limits file's 'exemptions:' is written inline; edit that file by hand."
        )
    try:
        doc = parse_limits(new, source)
    except LimitsError as e:
        raise ExemptionError(
            f"The limits file would not parse after the edit, so nothing was changed: {e}"
        ) from e
    if not any(x.user == user and x.reason == reason for x in doc.exemptions):
        raise ExemptionError("The edit did not add the exemption; edit the limits file by hand.")
    return new


def write_atomically(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` (same folder, same mode, on disk), never leaving half a
    file."""
    write_text_atomically(path, text, mode=None, fsync=True)


def grant(
    path: str,
    user: str,
    lifts: list[str],
    reason: str,
    expires: date,
    granted_by: str,
    today: date,
) -> None:
    """Add the exemption to the limits file at ``path`` (ExemptionError, or OSError).

    The read-modify-write holds an exclusive lock on ``<path>.lock`` (next to the file, made once
    by the hub's user): two admins granting at the same moment both get their exemption, one after
    the other, instead of the second write replacing the first."""
    with _locked(path):
        text = Path(path).read_text("utf-8")
        write_atomically(
            path, add_exemption(text, user, lifts, reason, expires, granted_by, today, path)
        )


@contextmanager
def _locked(path: str) -> Iterator[None]:
    """An exclusive flock on ``<path>.lock`` (the limits file itself is replaced on each write, so
    a lock on it would be a lock on a file that no longer is the limits file)."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
