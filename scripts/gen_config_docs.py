"""Generate docs/configuration.md from the traits of ds01spawner.DS01Spawner.

    python scripts/gen_config_docs.py           # write docs/configuration.md
    python scripts/gen_config_docs.py --check   # exit 1 when the file is stale

Names, types, defaults and help texts come from the classes themselves: the settings DS01Spawner
and its DS01 mixins (``ds01spawner.spawner.*``) define, and the inherited settings whose default
they change (their ``@default`` generators). Only the one-line notes below are written by hand.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from dockerspawner import DockerSpawner
from traitlets import Bool, CaselessStrEnum, Container, Dict, Enum, Float, Int, Unicode, Union
from traitlets.config import Config
from traitlets.traitlets import DefaultHandler, TraitType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ds01spawner import DS01Spawner  # noqa: E402 - after the path is set

OUTPUT = REPO / "docs" / "configuration.md"
COMMAND = "python scripts/gen_config_docs.py"

#: What DS01 does with an inherited setting whose default it changes (hand-written, one line).
CHANGED_NOTES = {
    "apply_user_options": (
        "DS01 reads and checks `user_options` (`project`, `gpus`, `gpu_type`) in `start()`; "
        "its default hook only stops JupyterHub from warning that they are unhandled."
    ),
    "server_token_scopes": (
        "JupyterHub's `server` role plus `access:services!service=ds01-limits`: the server's "
        "token reads its owner's session data for the JupyterLab panel (docs/user-guide.md)."
    ),
    "image": "Image of every server. It must exist locally: DS01 never pulls.",
    "network_name": (
        "`host`: one loopback port per server. A named network needs `use_internal_ip = True`."
    ),
    "cmd": "Runs after DS01's start script (makes `HOME`, changes to `/workspace`).",
    "notebook_dir": "JupyterLab's root folder, the project mount.",
    "remove": "Always `True`: `False` is ignored with a warning. Containers never outlive a stop.",
    "pull_policy": "Not consulted: a missing image fails the start with HTTP 503.",
    "prefix": (
        "First part of container names (`<prefix>-<escaped user>.<server>`) and of project "
        "image names (`<prefix>-<user>/<project>:<hash>`)."
    ),
    "start_timeout": (
        "Covers an image build: `image_build_timeout` + `http_timeout` + 60 s. The hub refuses "
        "to start with a shorter one while `project_images` is on (docs/images.md)."
    ),
}

#: Section titles of the DS01 mixins whose settings are documented (set as c.DS01Spawner.<name>).
MIXIN_SECTIONS = {
    "ImageSteps": "Project images (Dockerfile builds)",
    "SessionSteps": 'The "DS01 session" panel in JupyterLab',
}

#: Inherited settings an admin is most likely to set, with a one-line note each (hand-written).
INHERITED_NOTES = {
    "mem_limit": 'Memory limit of each container, e.g. `"16G"`; `0`: no limit.',
    "cpu_limit": "CPU cores each container may use, e.g. `4.0`; `0`: no limit.",
    "volumes": (
        "Extra mounts `{host: container}` (`read_only_volumes`: the same, read-only). "
        "The Docker socket, or anything over `/workspace`, is refused."
    ),
    "http_timeout": "Seconds a started server may take to listen on its port and answer HTTP.",
    "client_kwargs": 'Arguments for the Docker client, e.g. `{"base_url": "tcp://..."}`.',
    "extra_host_config": (
        "More container host settings, from an allow-list (e.g. `shm_size`, `pids_limit`, "
        "`ulimits`, `dns`, `tmpfs`); anything that weakens isolation (`privileged`, "
        "`pid_mode`, `devices`, `cap_add`, ...) fails the start with an admin log line."
    ),
    "extra_create_kwargs": (
        "`environment` and `labels` are merged (DS01's own keys win); "
        "`hostname`, `domainname`, `healthcheck` are set; nothing else is accepted."
    ),
}

_SIMPLE_TYPES = {Unicode: "str", Int: "int", Float: "float", Bool: "bool", Dict: "dict"}
_NAMED_TYPES = {"ByteSpecification": "bytes (int, or str such as '16G')", "Callable": "callable"}


def type_name(trait: TraitType) -> str:
    """A short, readable type of a trait: ``str``, ``list of str``, ``int >= 0`` ..."""
    if type(trait).__name__ in _NAMED_TYPES:
        return _NAMED_TYPES[type(trait).__name__]
    if isinstance(trait, (Enum, CaselessStrEnum)):
        return "one of " + ", ".join(repr(v) for v in trait.values)
    if isinstance(trait, Union):
        return " or ".join(type_name(t) for t in trait.trait_types)
    if isinstance(trait, Container):
        inner = getattr(trait, "_trait", None)
        return f"list of {type_name(inner)}" if inner is not None else "list"
    for cls, name in _SIMPLE_TYPES.items():
        if isinstance(trait, cls):
            low = getattr(trait, "min", None)
            bounded = low is not None and abs(low) != float("inf")
            return f"{name} >= {low}" if bounded else name
    return type(trait).__name__


def literal(name: str, value: object) -> str:
    """The default as a Python literal (permission bits in octal)."""
    if name.endswith("_mode") and isinstance(value, int) and not isinstance(value, bool):
        return oct(value)
    if callable(value):  # a function's repr has its address: name what it is instead
        return "(a function of DS01Spawner)"
    if name.endswith("_limit") and isinstance(value, int) and value >= 1 << 20:
        return f"{value!r} ({value >> 20} MiB)"
    return repr(value)


def help_text(trait: TraitType) -> str:
    """The help of a trait, dedented, with reST ``code`` turned into Markdown `code`."""
    return inspect.cleandoc(trait.help or "(no help text)").replace("``", "`")


def first_sentence(trait: TraitType) -> str:
    line = help_text(trait).split("\n\n")[0].replace("\n", " ").strip()
    return line.split(". ")[0].rstrip(".") + "."


def ds01_classes(cls: type = DS01Spawner) -> list[type]:
    """``cls`` and the DS01 mixins it is made of (classes of the ds01spawner package)."""
    return [c for c in cls.__mro__ if c.__module__.startswith("ds01spawner")]


def class_config_traits(cls: type) -> dict[str, TraitType]:
    """Config traits that ``cls`` defines itself, in the order of the class body."""
    if not hasattr(cls, "class_own_traits"):  # a plain mixin without traits
        return {}
    own = cls.class_own_traits(config=True)
    return {name: own[name] for name in vars(cls) if name in own}


def own_config_traits(cls: type = DS01Spawner) -> dict[str, TraitType]:
    """Config traits that ``cls`` and its DS01 mixins define (all set as ``c.DS01Spawner.x``)."""
    traits: dict[str, TraitType] = {}
    for c in ds01_classes(cls):
        traits.update(class_config_traits(c))
    return traits


def changed_defaults(cls: type = DS01Spawner) -> list[str]:
    """Inherited config traits whose default ``cls`` (or a DS01 mixin) replaces with an
    ``@default`` generator."""
    config_traits = cls.class_traits(config=True)
    own = own_config_traits(cls)
    names = []
    for c in ds01_classes(cls):
        for value in vars(c).values():
            if isinstance(value, DefaultHandler):
                name = value.trait_name
                if name in config_traits and name not in own and name not in names:
                    names.append(name)
    return names


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """The whole of docs/configuration.md."""
    ours = DS01Spawner(config=Config())  # defaults only: no config file is read
    theirs = DockerSpawner(config=Config())
    traits = DS01Spawner.class_traits()
    out = [
        "# Configuration reference",
        "",
        f"<!-- Generated from DS01Spawner by `{COMMAND}`; do not edit by hand. -->",
        "",
        "Set these in `jupyterhub_config.py`, e.g. `c.DS01Spawner.stop_grace_seconds = 60`.",
        "Defaults are the values DS01Spawner has when the config sets nothing; the shipped",
        "`jupyterhub_config.py` overrides some of them for the demo (e.g. `workspace_root`).",
        "See [admin-guide.md](admin-guide.md) for how the pieces fit together.",
        "",
        "## DS01Spawner settings",
        "",
    ]
    for cls in ds01_classes():
        if cls.__name__ not in ("DS01Spawner", "SpawnerSettings"):  # the class's own section
            if not class_config_traits(cls):
                continue
            title = MIXIN_SECTIONS.get(cls.__name__, cls.__name__)
            out += [f"## {title}", "", "Also set as `c.DS01Spawner.<name>`.", ""]
        for name, trait in class_config_traits(cls).items():
            default = literal(name, getattr(ours, name))
            out += [f"### `{name}`", "", f"Type: {type_name(trait)}. Default: `{default}`.", ""]
            out += [help_text(trait), ""]

    out += [
        "## DockerSpawner settings with a DS01 default",
        "",
        "| setting | type | DS01 default | DockerSpawner default | in DS01 |",
        "|---|---|---|---|---|",
    ]
    for name in changed_defaults():
        trait = traits[name]
        ds01 = literal(name, getattr(ours, name))
        upstream = literal(name, getattr(theirs, name))
        note = CHANGED_NOTES.get(name, first_sentence(trait))
        out.append(
            f"| `{name}` | {_cell(type_name(trait))} | `{_cell(ds01)}` | `{_cell(upstream)}` "
            f"| {_cell(note)} |"
        )

    out += [
        "",
        "## Inherited settings you may want",
        "",
        "Set as `c.DS01Spawner.<name>` (or `c.DockerSpawner.<name>`, `c.Spawner.<name>`).",
        "Other DockerSpawner and Spawner settings keep their upstream meaning, except that DS01",
        "makes the container and its name itself: `mounts`, `links`, `host_ip` and",
        "`name_template` have no effect.",
        "",
        "| setting | type | default | what it does |",
        "|---|---|---|---|",
    ]
    for name, note in INHERITED_NOTES.items():
        trait = traits[name]
        default = literal(name, getattr(ours, name))
        out.append(f"| `{name}` | {_cell(type_name(trait))} | `{_cell(default)}` | {note} |")
    out.append("")
    return "\n".join(out)


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def check(path: Path = OUTPUT) -> str | None:
    """None when ``path`` matches what render() makes now, else a sentence saying what to do."""
    want = render()
    try:
        have = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"{_shown(path)} does not exist; run `{COMMAND}` to create it."
    if have != want:
        return (
            f"{_shown(path)} is out of date with the traits of DS01Spawner; "
            f"run `{COMMAND}` and commit the result."
        )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    args = parser.parse_args(argv)
    if args.check:
        problem = check()
        if problem:
            print(problem, file=sys.stderr)
            return 1
        print(f"{_shown(OUTPUT)} is up to date")
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {_shown(OUTPUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
