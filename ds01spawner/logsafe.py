"""Text from untrusted sources (a container's output, a build's output, a user's Dockerfile) made
safe for the hub's log: it can never forge a log line.

Every line of such text is indented with ``"    | "`` (so no line of it can start like a hub log
line, ``[I 2026-...``), and every control or line-breaking character other than the line breaks
themselves (``\\r``, escape sequences, NEL, U+2028/9, ...) is written as ``\\xNN``/``\\uNNNN``, so a
terminal or log viewer shows exactly what the container printed. Imports nothing of the package.
"""

from __future__ import annotations

import unicodedata

PREFIX = "    | "


def _escape_char(c: str) -> str:
    if c == "\t":
        return c
    if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn") and c != " ":
        n = ord(c)
        return f"\\x{n:02x}" if n < 0x100 else (f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
    return c


def escape_line(text: str) -> str:
    """One line of untrusted text with every control character escaped (newlines too)."""
    return "".join(_escape_char(c) for c in text)


def untrusted(text: str | bytes, max_chars: int = 8000) -> str:
    """Untrusted (multi-line) text as an indented block for the hub log: each line starts with
    ``"    | "`` on a line of its own, control characters escaped, at most ``max_chars`` kept
    (the end, which holds the error)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if len(text) > max_chars:
        text = "..." + text[-max_chars:]
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(PREFIX + escape_line(line) for line in lines)
