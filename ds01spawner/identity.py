"""Which uid:gid a user's container runs as.

A user with a system account runs as that account (uid, primary gid, supplementary groups).
Anyone else runs as the configured fallback uid:gid. Root is never allowed.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass, field


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
    try:
        return os.getgrouplist(username, gid)
    except OSError:
        return [g.gr_gid for g in grp.getgrall() if username in g.gr_mem] + [gid]
