"""A project's ``.dockerignore`` with Docker's semantics: ``*``, ``?``, ``**``, ``[...]``, ``!``
exceptions, the last matching line wins, a pattern also matches everything below a folder it
matches (``IgnoreRules``); the admin's default excludes come first. Pure.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_EXCLUDES = ("data", "models", "outputs", ".git")
ALWAYS_SENT = ("Dockerfile", ".dockerignore")
_REGEX_ESCAPED = ".+()|{}$"  # what Docker's patternmatcher escapes


class ContextError(ValueError):
    """A build context DS01 will not send; str() is a sentence for the user."""


# ---- .dockerignore -----------------------------------------------------------------------------


def parse_dockerignore(text: str) -> list[tuple[int, str]]:
    """``[(line number, pattern)]`` as Docker reads ``.dockerignore``: ``#`` comment lines and
    blank lines dropped, whitespace trimmed, patterns cleaned (``./a//b/`` -> ``a/b``), a
    leading ``/`` removed; exceptions keep their ``!``."""
    out = []
    for n, line in enumerate(text.lstrip("\ufeff").split("\n"), 1):
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = _clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append((n, ("!" if invert else "") + pattern))
    return out


def _clean(path: str) -> str:
    """Go's filepath.Clean for '/'-separated paths."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


@dataclass(frozen=True)
class Pattern:
    text: str  # cleaned, without '!'
    exclusion: bool  # a '!' line: brings matching paths back
    regex: re.Pattern
    where: str  # where it came from, for messages

    def matches(self, path: str) -> bool:
        return self.regex.match(path) is not None


def compile_pattern(pattern: str, where: str) -> Pattern:
    """Compile one pattern the way Docker's patternmatcher does (``*`` and ``?`` never match
    '/', ``**`` matches any number of folders, ``\\`` escapes, ``[...]`` is a class)."""
    exclusion = pattern.startswith("!")
    text = pattern[1:] if exclusion else pattern
    if exclusion and not text:
        raise ContextError(f'{where} is "!" alone, which Docker does not accept.')
    text = _clean(text)
    regex = ["^"]
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "*":
            if i + 1 < n and text[i + 1] == "*":
                i += 2
                if i < n and text[i] == "/":
                    i += 1
                regex.append(".*" if i >= n else "(.*/)?")
                continue
            regex.append("[^/]*")
        elif c == "?":
            regex.append("[^/]")
        elif c == "\\":
            if i + 1 < n:
                i += 1
                regex.append(re.escape(text[i]))
            else:
                regex.append(re.escape("\\"))
        elif c in _REGEX_ESCAPED:
            regex.append("\\" + c)
        else:  # as Docker: '[', ']', '^', '-' ... reach the regular expression as they are
            regex.append(c)
        i += 1
    regex.append("$")
    try:
        compiled = re.compile("".join(regex), re.S)
    except re.error as e:
        raise ContextError(f"{where} ({pattern!r}) is not a valid pattern: {e}.") from e
    return Pattern(text, exclusion, compiled, where)


class IgnoreRules:
    """The patterns that decide what is left out of a build context."""

    def __init__(self, patterns: Iterable[Pattern]) -> None:
        self.patterns = list(patterns)
        self._has_exceptions = any(p.exclusion for p in self.patterns)

    @classmethod
    def for_project(
        cls, dockerignore: str | None, default_excludes: Iterable[str] = DEFAULT_EXCLUDES
    ) -> IgnoreRules:
        patterns = [
            compile_pattern(p, f"The default exclude {p!r}") for p in default_excludes if p.strip()
        ]
        for n, p in parse_dockerignore(dockerignore or ""):
            patterns.append(compile_pattern(p, f"Line {n} of your .dockerignore"))
        rules = cls(patterns)
        # Docker always sends the Dockerfile and .dockerignore, even when a line excludes them
        for name in ALWAYS_SENT:
            if rules.excluded(name):
                rules.patterns.append(compile_pattern("!" + name, "DS01"))
                rules._has_exceptions = True
        return rules

    def excluded(self, path: str) -> bool:
        """Docker's MatchesOrParentMatches: the last pattern that matches ``path`` or one of its
        parent folders decides."""
        parents = path.split("/")[:-1]
        prefixes = ["/".join(parents[: i + 1]) for i in range(len(parents))]
        matched = False
        for p in self.patterns:
            if p.exclusion != matched:
                continue
            hit = p.matches(path) or any(p.matches(d) for d in prefixes)
            if hit:
                matched = not p.exclusion
        return matched

    def must_descend(self, folder: str) -> bool:
        """Whether an excluded folder must still be walked: an exception pattern starts inside
        it (Docker's rule: a textual prefix match)."""
        if not self._has_exceptions:
            return False
        prefix = folder + "/"
        return any(p.exclusion and (p.text + "/").startswith(prefix) for p in self.patterns)
