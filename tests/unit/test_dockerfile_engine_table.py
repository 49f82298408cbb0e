"""Tricky Dockerfiles, each with the reading Docker's own parser gives it.

The expected readings are written down from the engine's documented rules (docs.docker.com
reference/dockerfile: "Parser directives", "escape"; moby/buildkit frontend/dockerfile/parser:
``reDirectives``, the continuation regex ``escape[ \\t]*$``, comment and empty lines skipped
inside a continuation, words split on ``[\\t\\v\\f\\r ]``), not from DS01's code. Either DS01
reads exactly the images the engine reads, or it refuses the file. Several were also checked
against this machine's engine (Docker 20.10, legacy builder): docs/security.md.
"""

import pytest

from ds01spawner.images.dockerfile import DockerfileError, check_allowed, parse_dockerfile
from ds01spawner.images.dockerfile_rules import extends_layers

REFUSED = "refused"
B = "\\"

CASES = [
    # -- baseline
    ("plain", "FROM ds01/base\nRUN true\n", ["ds01/base"]),
    (
        "keywords any case, tabs split words",
        "from\tds01/base\tAS\tb\nFrOm evil\n",
        ["ds01/base", "evil"],
    ),
    # -- escape directive (docs: "# escape=`" at the top changes the escape character)
    (
        "backtick escape: backslash is literal, so FROM evil is an instruction",
        f"# escape=`\nFROM ds01/base\nRUN echo {B}\nFROM evil\n",
        ["ds01/base", "evil"],
    ),
    (
        "directive spelling: case-insensitive key, spaces around =",
        f"#  ESCAPE = `\nFROM ds01/base\nRUN echo {B}\nFROM evil\n",
        ["ds01/base", "evil"],
    ),
    (
        "backtick escape continues with a backtick",
        "# escape=`\nFROM ds01/base\nRUN echo `\nFROM evil\n",
        ["ds01/base"],
    ),
    (
        "BOM then a directive: one BOM is dropped, the directive counts",
        f"\ufeff# escape=`\nFROM ds01/base\nRUN a {B}\nFROM evil\n",
        ["ds01/base", "evil"],
    ),
    (
        "directive after the first instruction is a comment",
        "FROM ds01/base\n# escape=`\nRUN a `\nFROM evil\n",
        ["ds01/base", "evil"],
    ),
    # -- directives Docker versions read differently, or that pick a frontend: refused
    (
        "indented directive (old parser reads it, new one does not)",
        "  # escape=`\nFROM ds01/base\nRUN a `\nFROM evil\n",
        REFUSED,
    ),
    (
        "unknown directive ends directive parsing (escape below is a comment)",
        f"# foo=bar\n# escape=`\nFROM ds01/base\nRUN a {B}\nFROM evil\n",
        REFUSED,
    ),
    ("directive after a blank line", "\n# escape=`\nFROM ds01/base\n", REFUSED),
    ("directive after a comment", "# hi\n# escape=`\nFROM ds01/base\n", REFUSED),
    (
        "directive after a shebang (BuildKit skips the shebang)",
        "#!/usr/bin/env docker\n# escape=`\nFROM ds01/base\n",
        REFUSED,
    ),
    ("syntax picks a frontend image", "# syntax=evil/frontend\nFROM ds01/base\n", REFUSED),
    ("check directive", "# check=skip=all\nFROM ds01/base\n", REFUSED),
    ("escape twice (Docker refuses)", "# escape=`\n# escape=`\nFROM ds01/base\n", REFUSED),
    # -- continuations: escape + only spaces/tabs at the end of a line
    (
        # Docker >= 20.10: ``([^\\])\\[ \t]*$`` (no continuation; this engine read the FROM),
        # older: ``\\[ \t]*$`` (continues): the versions disagree
        "escaped backslash at the end of a line",
        f"FROM ds01/base\nRUN echo {B}{B}\nFROM evil\n",
        REFUSED,
    ),
    (
        "escaped backtick at the end of a line, with escape=`",
        "# escape=`\nFROM ds01/base\nRUN echo ``\nFROM evil\n",
        REFUSED,
    ),
    (
        "an escape alone on a continuation line continues",
        f"FROM ds01/base\nRUN echo {B}\n  {B}\nFROM evil\n",
        ["ds01/base"],
    ),
    (
        "escape then spaces and tabs continues",
        f"FROM ds01/base\nRUN echo {B} \t \nFROM evil\n",
        ["ds01/base"],
    ),
    (
        "escape then NBSP does not continue for Docker",
        f"FROM ds01/base\nRUN echo {B}\u00a0\nFROM evil\n",
        REFUSED,
    ),
    ("escape then form feed", f"FROM ds01/base\nRUN echo {B}\f\nFROM evil\n", REFUSED),
    ("escape then vertical tab", f"FROM ds01/base\nRUN echo {B}\v\nFROM evil\n", REFUSED),
    ("NEL", f"FROM ds01/base\nRUN echo {B}\u0085\nFROM evil\n", REFUSED),
    ("a lone carriage return", f"FROM ds01/base\nRUN a {B}\rFROM evil\n", REFUSED),
    (
        "CRLF line ends continue like LF",
        f"FROM ds01/base\r\nRUN a {B}\r\nFROM evil\r\n",
        ["ds01/base"],
    ),
    (
        "a comment line inside a continuation is skipped, even ending in the escape",
        f"FROM ds01/base\nRUN echo {B}\n# note {B}\nFROM evil\n",
        ["ds01/base"],
    ),
    (
        "an indented comment inside a continuation is skipped",
        f"FROM ds01/base\nRUN echo {B}\n    # note\nFROM evil\n",
        ["ds01/base"],
    ),
    (
        "an empty line inside a continuation is skipped",
        f"FROM ds01/base\nRUN echo {B}\n\nFROM evil\n",
        ["ds01/base"],
    ),
    (
        "a comment line outside a continuation ends nothing",
        f"FROM ds01/base\n# RUN x {B}\nFROM evil\n",
        ["ds01/base", "evil"],
    ),
    ("two BOMs", "\ufeff\ufeffFROM ds01/base\n", REFUSED),
    # -- heredocs: BuildKit reads the body as data, the legacy builder as instructions
    ("heredoc", "FROM ds01/base\nRUN <<EOF\nFROM evil\nEOF\n", REFUSED),
    ("heredoc with fd and dash", 'FROM ds01/base\nCOPY 3<<-"EOF" /x\nFROM evil\nEOF\n', REFUSED),
    # -- what FROM / --from name
    (
        "FROM of a number is an image (stage names start with a letter)",
        "FROM ds01/base AS a\nFROM 0\n",
        ["ds01/base", "0"],
    ),
    ("FROM of an earlier stage reads no image", "FROM ds01/base AS a\nFROM A\n", ["ds01/base"]),
    (
        "COPY --from an earlier stage by name and index",
        "FROM ds01/base AS a\nFROM ds01/base\nCOPY --from=a /x /x\nCOPY --from=0 /y /y\n",
        ["ds01/base", "ds01/base"],
    ),
    ("COPY --from another image", "FROM ds01/base\nCOPY --from=ds01-bob/p:1 / /\n", REFUSED),
    ("COPY --from a later stage", "FROM ds01/base\nCOPY --from=1 / /\nFROM ds01/base\n", REFUSED),
    (
        "RUN --mount from another image",
        "FROM ds01/base\nRUN --mount=type=bind,from=evil,target=/e true\n",
        REFUSED,
    ),
    (
        "RUN --mount from an earlier stage",
        "FROM ds01/base AS a\nFROM ds01/base\nRUN --mount=type=bind,from=a,target=/e true\n",
        ["ds01/base", "ds01/base"],
    ),
    ("a keyword that only looks like FROM", "FROM ds01/base\nFR\u041eM evil\n", REFUSED),
]


@pytest.mark.parametrize("text, engine_reads", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_ds01_reads_what_the_engine_reads_or_refuses(text, engine_reads):
    if engine_reads is REFUSED:
        with pytest.raises(DockerfileError):
            check_allowed(parse_dockerfile(text), ["ds01/*", "evil", "0"])
        return
    parsed = parse_dockerfile(text)
    assert [r.image for r in parsed.images] == engine_reads


def test_a_hidden_second_from_is_refused_by_the_policy():
    """The attack of finding 3: DS01 must see the FROM the engine will use."""
    text = f"# escape=`\nFROM ds01/base\nRUN echo {B}\nFROM ds01-bob/thesis:latest\n"
    with pytest.raises(DockerfileError, match="ds01-bob/thesis"):
        check_allowed(parse_dockerfile(text), ["ds01/*"])


def test_the_final_base_follows_stage_references_back_to_an_image():
    text = "FROM ds01/base AS a\nFROM ds01/gpu AS b\nFROM a AS c\nFROM c\n"
    assert parse_dockerfile(text).final_base() == "ds01/base"
    assert parse_dockerfile("FROM ds01/base AS a\nFROM ds01/gpu\n").final_base() == "ds01/gpu"


def test_a_built_image_must_keep_its_base_layers_below_its_own():
    base = ["sha256:a", "sha256:b"]
    assert extends_layers(["sha256:a", "sha256:b", "sha256:c"], base)
    assert extends_layers(base, base)  # a build that added no layer
    assert not extends_layers(["sha256:x", "sha256:b", "sha256:c"], base)  # another image
    assert not extends_layers(["sha256:a"], base)
