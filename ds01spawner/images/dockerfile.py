"""Which images a Dockerfile starts from, and whether this server allows them (pure functions).

The parser follows Docker's own rules where they matter for the policy: parser directives
(``# escape=``), comments, line continuations, case-insensitive instructions, ``ARG`` before the
first ``FROM`` (the only variables a ``FROM`` line can use; ``--build-arg`` values override their
defaults), ``${X}``, ``$X``, ``${X:-default}``, ``${X:+alt}`` and quotes, ``FROM --platform=...
image AS name``, later ``FROM name`` of an earlier stage, and ``COPY --from=`` (which reads an
image too). Everything else in the file is left to Docker. What the engine could read
differently (odd whitespace, directives other than a plain ``# escape=``, heredocs) is refused
by ``dockerfile_rules``; ``COPY --from`` and ``RUN --mount=from=`` may only name an earlier stage.

Every error is a :class:`DockerfileError` whose text is a sentence for the user naming the line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from .dockerfile_rules import (
    DockerfileError,
    check_characters,
    check_instruction,
    read_directives,
)

__all__ = ["DockerfileError", "ParsedDockerfile", "check_allowed", "parse_dockerfile"]

#: Docker's stage-name rule (names are compared in lower case)
_STAGE_NAME_RE = re.compile(r"[a-z][a-z0-9_.-]*")
_VAR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INSTRUCTION_RE = re.compile(r"(\S+)\s*(.*)", re.S)
_MAX_NESTING = 16
_SHOWN = 120  # characters of an instruction quoted in a message

#: What a user is told to do when a base image is refused.
FIX_SENTENCE = "Start your Dockerfile FROM one of the allowed images, for example ds01/base:latest."


@dataclass(frozen=True)
class Stage:
    """One ``FROM`` instruction."""

    lineno: int  # line of the FROM (1-based)
    text: str  # the instruction as written (continuations joined)
    image: str  # what it starts from, after ARG substitution
    name: str | None  # ``AS name``, lower case
    platform: str | None
    stage_ref: bool  # ``image`` names an earlier stage of this file


@dataclass(frozen=True)
class ImageRef:
    """An image the build reads that is not a stage of the file (``FROM`` or ``COPY --from``)."""

    lineno: int
    text: str
    image: str


@dataclass(frozen=True)
class ParsedDockerfile:
    stages: tuple[Stage, ...]
    images: tuple[ImageRef, ...]  # external images, in file order (may repeat)
    arg_names: frozenset[str]  # every ARG the file declares, anywhere

    def final_base(self) -> str:
        """The external image the built image starts from: the last stage's, following
        ``FROM <earlier stage>`` back to the image that stage started from."""
        stage = self.stages[-1]
        for _ in range(len(self.stages)):
            if not stage.stage_ref:
                break
            earlier = self.stages[: self.stages.index(stage)]
            stage = next(s for s in reversed(earlier) if s.name == stage.image.lower())
        return stage.image

    def external_images(self) -> list[str]:
        """The distinct external images, in order of first use (``scratch`` is not an image)."""
        seen: list[str] = []
        for ref in self.images:
            if ref.image != "scratch" and ref.image not in seen:
                seen.append(ref.image)
        return seen


def shown(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


# ---- lexing ------------------------------------------------------------------------------------


def logical_lines(text: str) -> tuple[list[tuple[int, str]], str]:
    """``[(first line number, instruction text)]`` and the escape character.

    Parser directives are read from the top; comment lines are dropped (also inside a
    continuation), an escape character at the end of a line joins the next one.
    """
    if text.startswith("\ufeff"):  # Docker drops one byte-order mark, at the very start
        text = text[1:]
    check_characters(text)
    lines = text.split("\n")
    escape, start = read_directives(lines)
    out: list[tuple[int, str]] = []
    current: str | None = None
    first = 0
    for n in range(start, len(lines)):
        raw = lines[n].rstrip("\r")
        stripped = raw.strip()
        if current is None:
            if not stripped or stripped.startswith("#"):
                continue
            current, first = "", n + 1
        elif not stripped or stripped.startswith("#"):
            continue  # empty and comment lines inside a continuation are skipped
        body = raw.rstrip(" \t")  # Docker: escape + only spaces and tabs continues the line
        if body.endswith(escape * 2):
            raise DockerfileError(
                f"Line {n + 1} of your Dockerfile ends with an escaped {escape}: Docker 20.10 "
                f"and later end the instruction there, older versions continue it on the next "
                f"line, so it is refused. Add a space or a character after it, or quote it."
            )
        if body.endswith(escape):
            current += body[:-1]
            continue
        out.append((first, (current + body).strip()))
        current = None
    if current is not None and current.strip():
        out.append((first, current.strip()))
    return out, escape


def split_words(text: str, escape: str) -> list[str]:
    """Split on whitespace outside quotes; quotes and escapes stay in the words."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if c == escape and i + 1 < len(text) and quote != "'":
            word.append(text[i : i + 2])
            i += 2
            continue
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c.isspace():
            if word:
                words.append("".join(word))
                word = []
            i += 1
            continue
        word.append(c)
        i += 1
    if word:
        words.append("".join(word))
    return words


def expand(word: str, env: Mapping[str, str], escape: str = "\\", where: str = "") -> str:
    """Docker's variable substitution and quote removal for one word.

    Unset variables are empty. ``${X:?message}`` of an unset variable is an error.
    """
    value, end = _expand(word, 0, env, escape, where, stop="", depth=0)
    return value


def _expand(
    word: str, i: int, env: Mapping[str, str], escape: str, where: str, stop: str, depth: int
) -> tuple[str, int]:
    if depth > _MAX_NESTING:
        raise DockerfileError(f"{where}nests variables more than {_MAX_NESTING} deep.")
    out: list[str] = []
    n = len(word)
    while i < n:
        c = word[i]
        if stop and c == stop:
            return "".join(out), i
        if c == escape and i + 1 < n:
            out.append(word[i + 1])
            i += 2
        elif c == "'":
            j = word.find("'", i + 1)
            if j < 0:
                raise DockerfileError(f"{where}has a quote ' that is never closed.")
            out.append(word[i + 1 : j])
            i = j + 1
        elif c == '"':
            i += 1
            while i < n and word[i] != '"':
                if word[i] == escape and i + 1 < n and word[i + 1] in f'"${escape}':
                    out.append(word[i + 1])
                    i += 2
                elif word[i] == "$":
                    text, i = _dollar(word, i, env, escape, where, depth)
                    out.append(text)
                else:
                    out.append(word[i])
                    i += 1
            if i >= n:
                raise DockerfileError(f'{where}has a quote " that is never closed.')
            i += 1
        elif c == "$":
            text, i = _dollar(word, i, env, escape, where, depth)
            out.append(text)
        else:
            out.append(c)
            i += 1
    if stop:
        raise DockerfileError(f"{where}has a ${{ that is never closed.")
    return "".join(out), i


def _dollar(
    word: str, i: int, env: Mapping[str, str], escape: str, where: str, depth: int
) -> tuple[str, int]:
    """Substitute the variable at ``word[i] == '$'``; return its value and the next index."""
    if word.startswith("${", i):
        m = _VAR_NAME_RE.match(word, i + 2)
        if not m:
            raise DockerfileError(f"{where}has a variable ${{...}} without a valid name.")
        name, j = m[0], m.end()
        if j < len(word) and word[j] == "}":
            return env.get(name, ""), j + 1
        op = word[j : j + 2]
        if op not in (":-", ":+", ":?"):
            raise DockerfileError(
                f"{where}uses a substitution ${{{name}{word[j : j + 2]}...}} DS01 does not "
                f"understand; use ${{{name}}}, ${{{name}:-default}} or ${{{name}:+value}}."
            )
        alt, k = _expand(word, j + 2, env, escape, where, stop="}", depth=depth + 1)
        value = env.get(name, "")
        if op == ":-":
            result = value or alt
        elif op == ":+":
            result = alt if value else ""
        else:
            if not value:
                raise DockerfileError(f"{where}needs the build argument {name}: {alt}")
            result = value
        return result, k + 1
    m = _VAR_NAME_RE.match(word, i + 1)
    if not m:
        return "$", i + 1
    return env.get(m[0], ""), m.end()


# ---- parsing -----------------------------------------------------------------------------------


def parse_dockerfile(text: str, build_args: Mapping[str, str] | None = None) -> ParsedDockerfile:
    """The stages and external images of a Dockerfile.

    ``build_args`` are the ``--build-arg`` values the build will get: they override the defaults
    of ``ARG`` lines before the first ``FROM`` (as in Docker).
    """
    build_args = dict(build_args or {})
    instructions, escape = logical_lines(text)
    env: dict[str, str] = {}  # global ARGs (before the first FROM)
    arg_names: set[str] = set()
    stages: list[Stage] = []
    images: list[ImageRef] = []
    for lineno, line in instructions:
        m = _INSTRUCTION_RE.fullmatch(line)
        assert m is not None
        keyword, rest = m[1].upper(), m[2]
        check_instruction(lineno, m[1], rest.split(), shown(line))
        where = f"Line {lineno} of your Dockerfile (`{shown(line)}`) "
        if keyword == "ARG":
            for name, default in _arg_pairs(rest, escape, where):
                arg_names.add(name)
                if stages:
                    continue  # an ARG inside a stage does not reach later FROM lines
                if name in build_args:
                    env[name] = build_args[name]
                elif default is not None:
                    env[name] = expand(default, env, escape, where)
                else:
                    env.setdefault(name, "")
        elif keyword == "FROM":
            stage = _parse_from(lineno, line, rest, env, escape, stages, where)
            stages.append(stage)
            if not stage.stage_ref:
                images.append(ImageRef(lineno, line, stage.image))
        elif not stages:
            raise DockerfileError(
                f"{where}comes before any FROM; a Dockerfile must start with FROM "
                f"(only ARG lines may come before it). {FIX_SENTENCE}"
            )
        elif keyword in ("COPY", "ADD", "RUN"):
            for ref in _from_refs(keyword, rest, escape, where):
                if not _is_stage(ref, stages[:-1], by_index=True):
                    raise DockerfileError(
                        f"{where}copies from {ref!r}, which is not an earlier stage of this "
                        f"Dockerfile; DS01 reads images only through FROM lines. Copy from an "
                        f"earlier stage (`FROM <allowed image> AS name`). {FIX_SENTENCE}"
                    )
    if not stages:
        raise DockerfileError(f"Your Dockerfile has no FROM line. {FIX_SENTENCE}")
    return ParsedDockerfile(tuple(stages), tuple(images), frozenset(arg_names))


def _arg_pairs(rest: str, escape: str, where: str) -> list[tuple[str, str | None]]:
    words = split_words(rest, escape)
    if not words:
        raise DockerfileError(f"{where}declares no argument.")
    pairs = []
    for word in words:
        name, eq, default = word.partition("=")
        if not _VAR_NAME_RE.fullmatch(name):
            raise DockerfileError(f"{where}declares an argument with an invalid name {name!r}.")
        pairs.append((name, default if eq else None))
    return pairs


def _parse_from(
    lineno: int,
    line: str,
    rest: str,
    env: Mapping[str, str],
    escape: str,
    stages: list[Stage],
    where: str,
) -> Stage:
    words = split_words(rest, escape)
    platform = None
    while words and words[0].startswith("--"):
        flag, _, value = words.pop(0).partition("=")
        if flag.lower() != "--platform":
            raise DockerfileError(
                f"{where}has an unknown option {flag}; FROM only knows --platform."
            )
        platform = expand(value, env, escape, where)
    name = None
    if len(words) == 3 and words[1].lower() == "as":
        name = words[2].lower()
        if not _STAGE_NAME_RE.fullmatch(name):
            raise DockerfileError(
                f"{where}names its stage {words[2]!r}; a stage name starts with a letter and "
                f"has only letters, digits, '-', '_' and '.'."
            )
        words = words[:1]
    if len(words) != 1:
        raise DockerfileError(
            f"{where}is not `FROM [--platform=...] <image> [AS <name>]`. {FIX_SENTENCE}"
        )
    image = expand(words[0], env, escape, where)
    if not image or any(c.isspace() for c in image):
        raise DockerfileError(
            f"{where}starts from {image!r} after its ARG values are filled in, which is no "
            f"image name. {FIX_SENTENCE}"
        )
    return Stage(lineno, line, image, name, platform, _is_stage(image, stages))


def _from_refs(keyword: str, rest: str, escape: str, where: str) -> list[str]:
    """What ``COPY --from=X`` / ``RUN --mount=...,from=X`` read (stages or images)."""
    refs = []
    for word in split_words(rest, escape):
        if not word.startswith("--"):
            break
        flag, eq, value = word.partition("=")
        flag = flag.lower()
        if flag == "--from" and keyword in ("COPY", "ADD"):
            refs.append(_flag_value(value if eq else "", where))
        elif flag == "--mount" and keyword == "RUN":
            for part in expand(value, {}, escape, where).split(","):
                key, _, v = part.partition("=")
                if key.strip().lower() == "from":
                    refs.append(_flag_value(v, where))
    return refs


def _flag_value(value: str, where: str) -> str:
    if "$" in value:
        raise DockerfileError(f"{where}uses a variable in --from; name the stage directly.")
    if not value:
        raise DockerfileError(f"{where}has a --from without a value.")
    return expand(value, {}, "\\", where)


def _is_stage(ref: str, stages: list[Stage], by_index: bool = False) -> bool:
    """``ref`` names one of ``stages`` (by name; by number only for --from, as in Docker)."""
    low = ref.lower()
    if by_index and low.isdigit():
        return int(low) < len(stages)
    return any(s.name == low for s in stages)


# ---- policy ------------------------------------------------------------------------------------


def normalized(image: str) -> str:
    """``image`` with ``:latest`` added when it has neither a tag nor a digest."""
    last = image.rsplit("/", 1)[-1]
    return image if (":" in last or "@" in image) else f"{image}:latest"


def is_allowed(image: str, patterns: Iterable[str]) -> bool:
    """True when ``image`` (as written, or with ``:latest`` added) matches one of ``patterns``
    (fnmatch-style, case-sensitive; ``*`` also matches '/' and ':'). A pattern without a tag or
    digest means ``:latest``, as in Docker: ``ds01/base`` allows ``ds01/base`` and
    ``ds01/base:latest``, not ``ds01/base:old`` (docs/images.md lists the forms)."""
    candidates = {image, normalized(image)}
    forms = {f for p in patterns for f in (p, normalized(p))}
    return any(fnmatchcase(c, p) for p in forms for c in candidates)


def check_allowed(parsed: ParsedDockerfile, patterns: Iterable[str]) -> None:
    """Raise DockerfileError naming the first line that reads an image not in ``patterns``."""
    patterns = list(patterns)
    for ref in parsed.images:
        if is_allowed(ref.image, patterns):
            continue
        how = "starts from" if ref.text.split(None, 1)[0].upper() == "FROM" else "copies from"
        allowed = ", ".join(patterns) if patterns else "(none: ask an admin)"
        raise DockerfileError(
            f"Line {ref.lineno} of your Dockerfile (`{shown(ref.text)}`) {how} the image "
            f"{ref.image!r}, which this server does not allow. Allowed base images: {allowed}. "
            f"{FIX_SENTENCE}"
        )
