"""The GPU queue: launches that wait for a device instead of being turned away.

The order rule (documented in docs/gpus.md, property-tested):

1. Waiters are considered in arrival order (first come, first served).
2. A waiter whose request fits in the free devices not yet given to or kept for an earlier
   waiter is served with them (the allocator's usual choice among those devices).
3. A waiter that does not fit **keeps** the free devices it could use, up to the number it asked
   for: no later waiter may take them. So a request for 2 GPUs at the front of the line collects
   devices as they free up, and a stream of 1-GPU requests behind it can never starve it. Devices
   it cannot use (another MIG profile, whole GPUs for a MIG request) still go to later waiters.
4. A new launch never jumps the line: while anyone waits, it joins the queue and is served by
   these same rules (at once, when it fits in what nobody earlier keeps).
5. One place per user and project.

``plan`` is a pure function of (waiters, devices, taken); ``GpuQueue`` holds the waiters of the
hub process and wakes them when something changes. Each waiter applies the plan for itself under
the hub's allocation lock, so serving is as atomic as a direct allocation.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..jsonfile import write_json_atomically
from .allocator import GpuRequest, candidates
from .model import Device


@dataclass
class Waiter:
    """One launch waiting for devices."""

    user: str
    server: str
    project: str
    request: GpuRequest
    joined: float = field(default_factory=time.time)  # epoch seconds, for people
    id: int = 0  # arrival order, set by GpuQueue.join
    cancelled: bool = False

    def as_dict(self, position: int) -> dict:
        return {
            "user": self.user,
            "server": self.server,
            "project": self.project,
            "gpus": self.request.count,
            "gpu_type": self.request.gpu_type,
            "since": self.joined,
            "position": position,
        }


@dataclass(frozen=True)
class Plan:
    served: dict[int, list[Device]]  # waiter id -> the devices it gets now
    kept: dict[int, list[Device]]  # waiter id -> free devices kept for it (it still waits)


def first_free(request: GpuRequest, usable: list[Device]) -> list[Device] | None:
    """The single engine's pick: the first ``count`` usable devices, None when too few."""
    return usable[: request.count] if len(usable) >= request.count else None


def plan(
    waiters: Iterable[Waiter],
    devices: list[Device],
    taken: Iterable[str],
    pick: Callable[[GpuRequest, list[Device]], list[Device] | None] = first_free,
) -> Plan:
    """Apply the order rule to the free devices (``devices`` minus ``taken``): in arrival
    order, a waiter is served when ``pick`` finds its devices among the free ones it can use;
    else every free device it could use is kept for it (a swarm passes a pick with its node
    rule, ``swarm.cluster_gpus``)."""
    free = {d.uuid for d in devices} - set(taken)
    served: dict[int, list[Device]] = {}
    kept: dict[int, list[Device]] = {}
    for w in sorted(waiters, key=lambda w: w.id):
        if w.cancelled:
            continue
        usable = [d for d in candidates(w.request, devices) if d.uuid in free]
        picked = pick(w.request, usable)
        if picked is not None:
            served[w.id] = picked
            free -= {d.uuid for d in picked}
        else:
            kept[w.id] = usable
            free -= {d.uuid for d in usable}
    return Plan(served, kept)


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 21st ..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class QueueCancelled(Exception):
    """The waiting launch was stopped (Stop on the progress page, the REST API, the CLI)."""


class AlreadyWaiting(Exception):
    """The user already waits with this project."""


class GpuQueue:
    """The hub process's waiters, in arrival order; wakes them when devices may have freed."""

    def __init__(self, state_file: str = "") -> None:
        self._waiters: dict[int, Waiter] = {}
        self._ids = itertools.count(1)
        self._event = asyncio.Event()  # set, and replaced, at every change
        self.version = 0
        self.state_file = state_file
        self._write()  # a restarted hub starts with nobody waiting

    def snapshot(self) -> list[dict]:
        """Who waits for what, since when, in line order (for the JSON API and the admin)."""
        return [w.as_dict(i) for i, w in enumerate(self.waiters, 1)]

    def _write(self) -> None:
        """Publish the queue for services (the hub's own process holds it): a small JSON file,
        replaced atomically."""
        if not self.state_file:
            return
        try:
            write_json_atomically(
                self.state_file, {"updated": time.time(), "waiting": self.snapshot()}
            )
        except OSError as e:
            logging.getLogger("ds01spawner").warning(
                "Cannot write the GPU queue file %s: %s", self.state_file, e
            )

    def __len__(self) -> int:
        return len(self._waiters)

    @property
    def waiters(self) -> list[Waiter]:
        return sorted(self._waiters.values(), key=lambda w: w.id)

    def position(self, waiter: Waiter) -> int:
        """1 for the first in line."""
        return 1 + sum(1 for w in self._waiters.values() if w.id < waiter.id)

    def join(self, user: str, server: str, project: str, request: GpuRequest) -> Waiter:
        for w in self._waiters.values():
            if w.user == user and w.project == project:
                raise AlreadyWaiting(project)
        waiter = Waiter(user, server, project, request)
        waiter.id = next(self._ids)
        self._waiters[waiter.id] = waiter
        self.changed()
        return waiter

    def leave(self, waiter: Waiter) -> None:
        if self._waiters.pop(waiter.id, None) is not None:
            self.changed()

    def cancel(self, user: str, server: str) -> bool:
        """Stop the waiting launch of this server; True when there was one."""
        for w in list(self._waiters.values()):
            if w.user == user and w.server == server:
                w.cancelled = True
                self.leave(w)
                return True
        return False

    def changed(self) -> None:
        """Something that may free a device or move the line happened: wake every waiter."""
        self.version += 1
        self._write()
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, waiter: Waiter, seen_version: int, timeout: float) -> None:
        """Return when the queue changed after ``seen_version`` or ``timeout`` passed;
        QueueCancelled when the waiter was cancelled.

        No lock and no ``asyncio.wait_for`` here: a waiter cancelled while it waits (Stop, a
        hub shutdown that cancels every task) must leave at once and leave nothing held, and
        ``wait_for`` can lose a cancellation that arrives as the wait ends (Python 3.11).
        """
        if self.version == seen_version and not waiter.cancelled:
            woken = asyncio.ensure_future(self._event.wait())
            try:
                await asyncio.wait({woken}, timeout=max(0.0, timeout))
            finally:
                woken.cancel()
        if waiter.cancelled:
            raise QueueCancelled()
