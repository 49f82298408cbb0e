"""A user's projects: the folders in their workspace root, and the templates of new ones.

Listing never follows a link out of the user's root (the same rule as ``workspace``), and a
template is written into a new project folder through ``project_files`` (no links followed,
files owned by the user, nothing existing overwritten).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .files import ProjectFileError, make_project_dirs, write_project_file
from .names import project_name_problem
from .safepath import DIR_FLAGS, UnsafePath, open_dir
from .workspace import LINK_REFUSED, WorkspaceError, workspace_root_for


@dataclass(frozen=True)
class ProjectInfo:
    """One folder of a user's workspace that can be launched as a project."""

    name: str
    has_dockerfile: bool
    modified: float  # mtime of the folder, seconds since the epoch


def list_projects(root_template: str, username: str) -> list[ProjectInfo]:
    """The user's projects, by name; [] when the workspace root does not exist yet.

    A folder counts when its name is a valid project name and it is a plain folder (links are
    never launched: see workspace.py). The root is opened as ``prepare_workspace`` opens it
    (``safepath.open_dir``); WorkspaceError when the root itself may not be used.
    """
    root = workspace_root_for(root_template, username)
    try:
        root_fd, _ = open_dir(root)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except UnsafePath as e:
        raise WorkspaceError(LINK_REFUSED, admin_hint=f"{root}: {e}") from e
    except OSError as e:
        raise WorkspaceError(
            "Your workspace folder cannot be read; ask an admin to look at it.",
            admin_hint=f"listing {root} failed: {e}",
        ) from e
    try:
        found = [info for entry in os.scandir(root_fd) if (info := _project_info(root_fd, entry))]
    finally:
        os.close(root_fd)
    return sorted(found, key=lambda p: p.name)


def _project_info(root_fd: int, entry: os.DirEntry) -> ProjectInfo | None:
    if project_name_problem(entry.name) or not entry.is_dir(follow_symlinks=False):
        return None
    try:
        fd = os.open(entry.name, DIR_FLAGS, dir_fd=root_fd)
    except OSError:
        return None  # swapped for a link or removed meanwhile
    try:
        try:
            st = os.stat("Dockerfile", dir_fd=fd, follow_symlinks=False)
            has_dockerfile = stat.S_ISREG(st.st_mode)
        except OSError:
            has_dockerfile = False
        return ProjectInfo(entry.name, has_dockerfile, os.fstat(fd).st_mtime)
    finally:
        os.close(fd)


# ---- templates of new projects ---------------------------------------------------------------

_ML_README = """# {project}

A DS01 project. This folder is mounted at `/workspace` in every server you launch for it, and
it is the only place whose files survive a retire.

| folder | for |
|---|---|
| `data/` | datasets (not sent to image builds) |
| `models/` | checkpoints and trained models (not sent to image builds) |
| `notebooks/` | notebooks |
| `outputs/` | figures, logs, results (not sent to image builds) |

`Dockerfile` describes this project's environment. DS01 builds it when you launch the project
and reuses the image until the file (or what it copies) changes. Put the packages you need
there (for example `RUN pip install --no-cache-dir pandas`), not in a `pip install` at run time,
which is lost when the server is retired.
"""

_ML_DOCKERFILE = """# The environment of this project. DS01 builds it at launch and rebuilds
# only when this file, or what it copies, changes.
# Keep the FROM line: the DS01 base image has JupyterLab.
FROM {base_image}

# Packages your project needs, for example:
# RUN pip install --no-cache-dir numpy pandas scikit-learn
"""

_ML_GITIGNORE = """data/
models/
outputs/
.ipynb_checkpoints/
"""

BUILTIN_TEMPLATES: dict[str, dict] = {
    "empty": {
        "description": "An empty folder.",
        "folders": [],
        "files": {},
    },
    "python-ml": {
        "description": (
            "Python / machine learning: data/, models/, notebooks/, outputs/, a starter "
            "Dockerfile from the DS01 base image, and a README."
        ),
        "folders": ["data", "models", "notebooks", "outputs"],
        "files": {
            "README.md": _ML_README,
            "Dockerfile": _ML_DOCKERFILE,
            ".gitignore": _ML_GITIGNORE,
        },
    },
}


class TemplateError(ValueError):
    """A template definition an admin got wrong; str() says which and why."""


def check_templates(templates: Mapping[str, Mapping]) -> None:
    """Refuse template definitions that could write outside a project or are malformed."""
    for name, spec in templates.items():
        problem = project_name_problem(name)
        if problem:
            raise TemplateError(f"template name {name!r}: use a short slug such as 'python-ml'")
        if not isinstance(spec, Mapping):
            raise TemplateError(f"template {name!r} must be a dict with 'description' and 'files'")
        unknown = set(spec) - {"description", "folders", "files"}
        if unknown:
            raise TemplateError(f"template {name!r}: unknown keys {sorted(unknown)}")
        for rel in [*spec.get("folders", []), *spec.get("files", {})]:
            parts = Path(rel).parts
            if not rel or Path(rel).is_absolute() or ".." in parts:
                raise TemplateError(f"template {name!r}: {rel!r} is not a path inside a project")


def apply_template(
    project_dir: Path | str,
    spec: Mapping,
    uid: int,
    gid: int,
    variables: Mapping[str, str],
    dir_mode: int = 0o750,
) -> list[str]:
    """Write a template's folders and files into a (new) project folder, owned by the user.

    ``{project}`` and ``{base_image}`` in file contents are replaced from ``variables``. An
    existing file is never overwritten. Returns the paths written, relative to the project.
    WorkspaceError when a path cannot be written safely (a link the user made, ...).
    """
    written = []
    try:
        for folder in spec.get("folders", []):
            make_project_dirs(project_dir, folder, uid, gid, dir_mode)
            written.append(folder + "/")
        for rel, content in spec.get("files", {}).items():
            text = str(content)
            for key, value in variables.items():
                text = text.replace("{" + key + "}", value)
            try:
                write_project_file(project_dir, rel, text, uid, gid, exclusive=True)
            except FileExistsError:
                continue
            written.append(rel)
    except ProjectFileError as e:
        raise WorkspaceError(
            "The project template could not be written into the new folder.",
            admin_hint=str(e),
        ) from e
    return written
