"""A name for the user inside their container, whatever image it runs (issue 15 item 9).

The container runs as the user's uid, which the image's ``/etc/passwd`` does not know: the
terminal said ``I have no name!`` and ``whoami`` failed. After the container is created and
before it starts, the hub copies in ``/etc/passwd`` and ``/etc/group``: the image's own
entries plus one for the user (name, uid, gid, home, shell). The files are written by the
engine as root, 0644, so the user cannot change them (``no-new-privileges`` is set as well).
Needs no change to any image and no file on the host.

The same copy gives a managed JupyterLab its defaults in the user's (fresh) HOME:
``LAB_SETTINGS`` turns off the "Would you like to get notified about official Jupyter news?"
question and the update check (issue 15 item 10). They are the user's settings, owned by them:
a user who wants the news turns it on in Settings.

``with_user`` is pure; ``install_identity`` does the engine I/O with the client it is given
(docker's APIClient; call it off the event loop). An image whose ``/etc`` is a link, or whose
files are not plain files of sane size, gets minimal files instead of its own.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterable

MAX_FILE = 1 << 20  # an /etc/passwd over 1 MiB is not read
_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
FALLBACK_PASSWD = "root:x:0:0:root:/root:/bin/sh\n"
FALLBACK_GROUP = "root:x:0:\n"
#: JupyterLab user settings written into HOME: (path below HOME, JSON text)
LAB_SETTINGS = (
    (
        ".jupyter/lab/user-settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings",
        '{"fetchNews": "false", "checkForUpdates": false}\n',
    ),
)


def account_name(username: str) -> str:
    """The JupyterHub name when it is a valid account name, else ``user``."""
    return username if _NAME.fullmatch(username) else "user"


def with_user(
    passwd: str, group: str, name: str, uid: int, gid: int, home: str, shell: str
) -> tuple[str, str]:
    """The image's passwd and group with the user's entries: lines with the same name or uid
    (passwd), the same name or gid (group) are replaced; everything else is kept."""
    keep = [
        line
        for line in passwd.splitlines()
        if line.split(":", 3)[0] != name and (line.split(":")[2:3] or [""])[0] != str(uid)
    ]
    keep.append(f"{name}:x:{uid}:{gid}:{name}:{home}:{shell}")
    groups = group.splitlines()
    if not any((g.split(":")[2:3] or [""])[0] == str(gid) for g in groups):
        groups = [g for g in groups if g.split(":", 1)[0] != name]
        groups.append(f"{name}:x:{gid}:")
    return "\n".join(keep) + "\n", "\n".join(groups) + "\n"


def _stat(client, container: str, path: str) -> dict | None:
    """The engine's stat of a path in the container (None when missing); the content is not
    read."""
    import docker

    try:
        stream, stat = client.get_archive(container, path)
    except docker.errors.NotFound:
        return None
    close = getattr(stream, "close", None)
    if close is not None:
        close()
    return stat or {}


def _read(client, container: str, path: str) -> str | None:
    """A plain text file of the created container (None when missing, a link, or too big)."""
    import docker

    try:
        stream, stat = client.get_archive(container, path)
    except docker.errors.NotFound:
        return None
    if (stat or {}).get("linkTarget") or (stat or {}).get("size", 0) > MAX_FILE:
        return None
    data = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.next()
        if member is None or not member.isfile() or member.size > MAX_FILE:
            return None
        return tar.extractfile(member).read().decode("utf-8", "replace")


def under_mount(path: str, mount_targets: Iterable[str]) -> str | None:
    """The mount target ``path`` is at or below, or None (pure). The hub never writes there:
    the engine re-binds a mount's host source for ``put_archive``, following host links."""
    clean = "/" + path.strip("/")
    for target in mount_targets:
        t = "/" + target.strip("/")
        if t == "/" or clean == t or clean.startswith(t + "/"):
            return target
    return None


def install_identity(
    client,
    container: str,
    username: str,
    uid: int,
    gid: int,
    home: str,
    mount_targets: Iterable[str] = ("/workspace",),
) -> str:
    """Write /etc/passwd and /etc/group into the created (not started) container; returns the
    account name. ValueError when the image's /etc is not a plain folder (nothing written).

    The lab settings go into HOME only when HOME is in the container's own filesystem (not at or
    under one of ``mount_targets``) and no folder on the way is a link; HOME is made (owned by
    the user) only when the image lacks it: an existing folder is never chowned."""
    name = account_name(username)
    etc = _stat(client, container, "/etc")
    if etc is not None and etc.get("linkTarget"):  # never write through a link the image made
        raise ValueError("the image's /etc is a link")
    passwd = _read(client, container, "/etc/passwd") or FALLBACK_PASSWD
    group = _read(client, container, "/etc/group") or FALLBACK_GROUP
    shell = "/bin/bash" if _stat(client, container, "/bin/bash") is not None else "/bin/sh"
    passwd, group = with_user(passwd, group, name, uid, gid, home, shell)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        if etc is None:
            folder = tarfile.TarInfo("etc")
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(folder)
        for member, text in (("passwd", passwd), ("group", group)):
            body = text.encode()
            info = tarfile.TarInfo(f"etc/{member}")
            info.size, info.mode, info.uid, info.gid = len(body), 0o644, 0, 0
            tar.addfile(info, io.BytesIO(body))
    client.put_archive(container, "/", buf.getvalue())
    mount = under_mount(home, mount_targets)
    if mount is not None:
        raise ValueError(f"HOME {home} is at or under the mount {mount}: lab settings not written")
    parts = home.strip("/").split("/")
    ancestors = ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
    stats = [_stat(client, container, path) for path in ancestors]
    if not any(s and s.get("linkTarget") for s in stats):  # never write through a link
        client.put_archive(container, "/", home_archive(home, uid, gid, stats[-1] is None))
    return name


def home_archive(home: str, uid: int, gid: int, make_home: bool = True) -> bytes:
    """A tar of HOME with the lab settings, every folder and file owned by the user; HOME's own
    entry only with ``make_home`` (the extraction would chown an existing folder)."""
    buf = io.BytesIO()
    root = home.strip("/")
    with tarfile.open(fileobj=buf, mode="w") as tar:
        made = set()
        first = root.count("/") + (1 if make_home else 2)
        for rel, text in LAB_SETTINGS:
            parts = f"{root}/{rel}".split("/")
            for i in range(first, len(parts)):
                folder = "/".join(parts[:i])
                if folder not in made:
                    made.add(folder)
                    info = tarfile.TarInfo(folder)
                    info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o755, uid, gid
                    tar.addfile(info)
            body = text.encode()
            info = tarfile.TarInfo("/".join(parts))
            info.size, info.mode, info.uid, info.gid = len(body), 0o644, uid, gid
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()
