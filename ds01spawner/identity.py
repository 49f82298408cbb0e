"""Which uid:gid a user's container runs as.

A user with a system account runs as that account (uid, primary gid, supplementary groups).
Anyone else runs as the configured fallback uid:gid. Root is never allowed.

These lookups run in worker threads, and go through NSS modules loaded into the hub process
(``files systemd`` on Debian, often ``sss`` or ``ldap``), which have a history of thread-safety
bugs; glibc's group enumeration (``grp.getgrall``) shares one static cursor and buffer per
process and is not thread-safe at all. So every NSS lookup of DS01 holds one process-wide lock,
``NSS_LOCK`` (a lookup takes microseconds to milliseconds; launches never wait on each other for
long), and enumeration is only a fallback.
"""

from __future__ import annotations

import grp
import os
import pwd
import threading
from dataclasses import dataclass, field

#: held around every NSS lookup (pwd, grp, getgrouplist) of DS01 in this process
NSS_LOCK = threading.RLock()


class IdentityError(Exception):
    """The user cannot be given a safe identity; str() is a sentence for the user."""


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    supplementary_gids: tuple[int, ...] = field(default=())
    system_account: bool = False

    @property
    def user_spec(self) -> str:
        """The ``user`` field of a container: ``"uid:gid"``."""
        return f"{self.uid}:{self.gid}"


def resolve_identity(
    username: str, fallback_uid: int, fallback_gid: int, use_system_accounts: bool = True
) -> Identity:
    """The identity of ``username``: their system account when one exists, else the fallback."""
    ident = None
    if use_system_accounts:
        try:
            with NSS_LOCK:
                pw = pwd.getpwnam(username)
        except (KeyError, ValueError):  # no such account, or a name with a NUL
            pw = None
        if pw is not None:
            try:
                groups = tuple(
                    g for g in _grouplist(username, pw.pw_gid) if g not in (pw.pw_gid, 0)
                )
            except OSError:
                groups = ()
            ident = Identity(pw.pw_uid, pw.pw_gid, groups, system_account=True)
    if ident is None:
        ident = Identity(fallback_uid, fallback_gid)
    if ident.uid == 0 or ident.gid == 0:
        raise IdentityError(
            "Servers never run as root, and your account maps to root. Ask an admin to give "
            "you a normal account."
        )
    return ident


def _grouplist(username: str, gid: int) -> list[int]:
    with NSS_LOCK:
        try:
            return os.getgrouplist(username, gid)
        except OSError:
            members = [g.gr_gid for g in grp.getgrall() if username in g.gr_mem]
            return [*members, gid]


def group_names(username: str) -> list[str]:
    """Names of the system account's groups (primary included); [] without an account.
    Thread-safe (under NSS_LOCK)."""
    with NSS_LOCK:
        try:
            primary = pwd.getpwnam(username).pw_gid
        except (KeyError, ValueError):
            return []
        names = set()
        for gid in _grouplist(username, primary):
            try:
                names.add(grp.getgrgid(gid).gr_name)
            except KeyError:  # a gid without a name
                continue
    return sorted(names)
