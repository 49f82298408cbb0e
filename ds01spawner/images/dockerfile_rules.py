"""What DS01 refuses in a Dockerfile because the engine could read it differently (pure).

The base-image policy is only as good as the agreement between DS01's reading of a Dockerfile and
the engine's. Docker's parser (moby/buildkit ``frontend/dockerfile/parser``, also vendored by the
legacy builder) has quirks that changed between versions; where a Dockerfile depends on one, DS01
refuses it with a sentence instead of guessing:

- **odd characters**: a line continues when the escape character is followed only by spaces and
  tabs (``\\[ \\t]*$``), words split on ``[\\t\\v\\f\\r ]``, comments and directives are found after
  stripping Go's ``unicode.IsSpace`` (which includes NBSP, NEL, U+2028...). Python's ideas of
  whitespace differ, so vertical tab, form feed, a carriage return not ending a line, any other
  control character, a second byte-order mark and every non-ASCII space are refused.
- **parser directives**: only a plain ``# escape=\\`` or ``# escape=``` in the block of
  directives at the very top is read. ``# syntax=`` (it makes BuildKit run a frontend image of
  the user's choosing), ``# check=`` and any other ``# key=value`` there is refused, and so is a
  line that looks like a directive anywhere before the first instruction (after a comment, a
  blank line, a shebang, or with leading whitespace): Docker versions disagree on such lines.
- **heredocs** (``RUN <<EOF``): BuildKit reads the body as data, the legacy builder as
  instructions.
- **quotes and escapes in options** (``COPY --chown='\\'' --from=img ...``): the engine splits an
  instruction's leading ``--`` options with its own quote rules (``extractBuilderFlags``: ``\\``
  escapes even inside single quotes, whatever ``# escape=`` says), so one option can hide
  another. Options are plain ``--name=value`` words or the Dockerfile is refused.
- **ONBUILD**: its instruction runs in a later build (a stage ``FROM`` this one) without passing
  through this reading, and may ``COPY --from`` any image on the engine: refused.

Imports nothing of the package.
"""

from __future__ import annotations

import re
import unicodedata


class DockerfileError(ValueError):
    """A Dockerfile DS01 will not build; str() is a sentence for the user."""


#: Docker's directive pattern (parser.go ``reDirectives``), applied after the leading ``#``.
DIRECTIVE_RE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
#: BuildKit's heredoc word (``reHeredoc``: optional fd digits, ``<<``, optional ``-``, a name).
HEREDOC_RE = re.compile(r"\d*<<-?[^<\s]")
_ASCII_KEYWORD_RE = re.compile(r"[A-Za-z]+")
#: What makes the engine's option splitter (extractBuilderFlags) differ from a plain split.
_OPTION_QUOTES = frozenset("'\"\\`")


def _odd(c: str) -> bool:
    """A character Docker's parser and Python may treat differently (as space or not)."""
    if c in "\t\n ":
        return False
    if c in "\v\f\x85\ufeff":
        return True
    cat = unicodedata.category(c)
    return cat == "Cc" or cat in ("Zs", "Zl", "Zp")


def check_characters(text: str) -> None:
    """DockerfileError naming the first odd character (see the module docstring)."""
    for n, line in enumerate(text.split("\n"), 1):
        body = line[:-1] if line.endswith("\r") else line  # CRLF: Go drops one \r per line
        for c in body:
            if _odd(c):
                name = unicodedata.name(c, "a control character")
                raise DockerfileError(
                    f"Line {n} of your Dockerfile has the invisible character U+{ord(c):04X} "
                    f"({name.lower()}). Docker and DS01 could read that line differently, so "
                    f"it is refused: replace it with a plain space, or remove it."
                )


def read_directives(lines: list[str]) -> tuple[str, int]:
    """(escape character, index of the first line after the directive block) for the lines of a
    Dockerfile (BOM already removed); DockerfileError for anything but a plain escape directive,
    or a directive-like line Docker versions disagree about."""
    escape = "\\"
    seen = False
    start = len(lines)
    for i, raw in enumerate(lines):
        line = raw.rstrip("\r")
        m = DIRECTIVE_RE.fullmatch(line)
        if not m:
            start = i
            break
        key = m[1].lower()
        where = f"Line {i + 1} of your Dockerfile (`{line.strip()[:80]}`)"
        if key == "syntax":
            raise DockerfileError(
                f"{where} asks for a Dockerfile frontend image; DS01 builds with the engine's "
                f"own parser only. Remove that line."
            )
        if key != "escape":
            raise DockerfileError(
                f"{where} is a parser directive DS01 does not read (only `# escape=` is); "
                f"remove it, or write the comment without '='."
            )
        if seen:
            raise DockerfileError(f"{where} sets the escape character a second time.")
        if m[2] not in ("\\", "`"):
            raise DockerfileError(
                f"{where} sets the escape character to {m[2]!r}; it can only be \\ or `."
            )
        escape, seen = m[2], True
    for i in range(start, len(lines)):
        stripped = lines[i].strip()
        if stripped and not stripped.startswith("#"):
            break  # the first instruction: later comments are comments for every Docker
        if DIRECTIVE_RE.fullmatch(stripped) and not stripped.startswith("#!"):
            raise DockerfileError(
                f"Line {i + 1} of your Dockerfile (`{stripped[:80]}`) looks like a parser "
                f"directive, but not in the block at the very top where Docker reads them "
                f"(after a comment, a blank line, or indented); Docker versions disagree on such "
                f"lines, so it is refused. Move it to the first line, or drop the '='."
            )
    return escape, start


def extends_layers(built: list[str], base: list[str]) -> bool:
    """Whether an image's layer chain (``RootFS.Layers``) starts with its base image's: every
    image built FROM a base keeps the base's layers, in order, below its own."""
    return len(built) >= len(base) and built[: len(base)] == base


def check_instruction(lineno: int, keyword: str, words: list[str], shown_text: str) -> None:
    """Refuse an instruction DS01 might read differently from the engine: a keyword that is not
    plain ASCII letters, ONBUILD, a heredoc, or quotes and escapes among its leading options
    (``words``: the instruction's text split on whitespace, as written)."""
    where = f"Line {lineno} of your Dockerfile (`{shown_text}`)"
    if not _ASCII_KEYWORD_RE.fullmatch(keyword):
        raise DockerfileError(f"{where} does not start with an instruction (FROM, RUN, COPY...).")
    if keyword.upper() == "ONBUILD":
        raise DockerfileError(
            f"{where} uses ONBUILD, whose instruction runs in a later build that DS01 cannot "
            f"check. Write the instruction in the stage that needs it."
        )
    for word in words:
        if not word.startswith("--"):
            break  # the engine's options end at the first word that does not start with --
        if any(c in _OPTION_QUOTES for c in word):
            raise DockerfileError(
                f"{where} has quotes or escape characters in its option {word!r}; Docker splits "
                f"options with rules of its own, so DS01 refuses them. Write each option as a "
                f"plain --name=value."
            )
    if any(HEREDOC_RE.match(w) for w in words):
        raise DockerfileError(
            f"{where} uses a heredoc (<<); the engines read heredocs differently, so DS01 "
            f"refuses them. Put the text in a file of the project and COPY it."
        )
