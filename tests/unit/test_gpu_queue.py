"""The GPU queue's order rule (gpus/queue.py), property-tested over random arrivals,
cancellations and releases, and the queue object's waking and cancelling."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01spawner.gpus.allocator import GpuRequest, candidates
from ds01spawner.gpus.model import Device
from ds01spawner.gpus.queue import AlreadyWaiting, GpuQueue, QueueCancelled, Waiter, ordinal, plan


def gpu(i: int) -> Device:
    return Device(f"GPU-{i}", str(i), "A100", 40960, "gpu")


def mig(i: int, profile: str) -> Device:
    share = {"3g.20gb": 3 / 7, "2g.10gb": 2 / 7, "1g.5gb": 1 / 7}[profile]
    return Device(f"MIG-{i}", f"9:{i}", f"A100 MIG {profile}", 5120, "mig", "GPU-9", profile, share)


DEVICES = [gpu(0), gpu(1), gpu(2), gpu(3), mig(0, "3g.20gb"), mig(1, "2g.10gb"), mig(2, "2g.10gb")]

requests = st.one_of(
    st.builds(GpuRequest, st.integers(1, 3), st.just("full")),
    st.builds(GpuRequest, st.integers(1, 2), st.just("any")),
    st.builds(GpuRequest, st.just(1), st.sampled_from(["mig", "3g.20gb", "2g.10gb"])),
)


def waiters_from(reqs) -> list[Waiter]:
    out = []
    for i, r in enumerate(reqs, 1):
        w = Waiter(f"u{i}", f"s{i}", f"p{i}", r)
        w.id = i
        out.append(w)
    return out


def test_ordinal():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st",
    ]  # fmt: skip


def test_the_head_keeps_what_it_can_use_and_others_take_the_rest():
    head, small, slice_ = waiters_from(
        [GpuRequest(2, "full"), GpuRequest(1, "full"), GpuRequest(1, "2g.10gb")]
    )
    taken = {"GPU-0", "GPU-1", "GPU-2", "MIG-1"}  # GPU-3 and MIG-0, MIG-2 free
    p = plan([head, small, slice_], DEVICES, taken)
    assert [d.uuid for d in p.kept[head.id]] == ["GPU-3"]  # kept for the 2-GPU request
    assert small.id in p.kept and p.kept[small.id] == []  # the 1-GPU request may not take it
    assert [d.uuid for d in p.served[slice_.id]] == ["MIG-2"]  # a device the head cannot use


def test_head_served_when_enough_free():
    head, small = waiters_from([GpuRequest(2, "full"), GpuRequest(1, "full")])
    p = plan([head, small], DEVICES, {"GPU-0"})
    assert [d.uuid for d in p.served[head.id]] == ["GPU-1", "GPU-2"]
    assert [d.uuid for d in p.served[small.id]] == ["GPU-3"]


@settings(max_examples=300, deadline=None)
@given(
    reqs=st.lists(requests, max_size=8),
    taken=st.sets(st.sampled_from([d.uuid for d in DEVICES])),
)
def test_plan_never_hands_out_a_device_twice_or_a_taken_one(reqs, taken):
    waiters = waiters_from(reqs)
    p = plan(waiters, DEVICES, taken)
    seen: set[str] = set(taken)
    for group in [*p.served.values(), *p.kept.values()]:
        uuids = {d.uuid for d in group}
        assert not uuids & seen
        seen |= uuids
    for w in waiters:
        assert (w.id in p.served) != (w.id in p.kept)
        if w.id in p.served:
            assert len(p.served[w.id]) == w.request.count


@settings(max_examples=300, deadline=None)
@given(
    reqs=st.lists(requests, max_size=8),
    taken=st.sets(st.sampled_from([d.uuid for d in DEVICES])),
)
def test_equal_requests_are_served_first_come_first_served(reqs, taken):
    waiters = waiters_from(reqs)
    p = plan(waiters, DEVICES, taken)
    for early in waiters:
        for late in waiters:
            if early.id < late.id and early.request == late.request and late.id in p.served:
                assert early.id in p.served, "a later equal request was served first"


events = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), requests),
        st.tuples(st.just("release"), st.integers(0, 50)),
        st.tuples(st.just("cancel"), st.integers(0, 50)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(events=events)
def test_no_starvation_and_no_double_allocation_over_time(events):
    """Simulate arrivals, releases and cancellations. Invariants after every step:
    a device has at most one holder; what the first in line keeps never shrinks while it
    stays first in line; it is served as soon as enough devices it can use are free."""
    holders: dict[str, int] = {}  # device -> waiter id that got it
    queue: list[Waiter] = []
    next_id = 1
    head_id, head_kept = None, 0

    def serve() -> None:
        nonlocal queue
        p = plan(queue, DEVICES, set(holders))
        for wid, devices in p.served.items():
            for d in devices:
                assert d.uuid not in holders, "device handed out twice"
                holders[d.uuid] = wid
        queue = [w for w in queue if w.id not in p.served]
        return p

    for kind, arg in events:
        if kind == "arrive":
            w = Waiter("u", f"s{next_id}", f"p{next_id}", arg)
            w.id = next_id
            next_id += 1
            queue.append(w)
        elif kind == "release" and holders:
            uuid = sorted(holders)[arg % len(holders)]
            owner = holders[uuid]
            for k in [k for k, v in holders.items() if v == owner]:
                del holders[k]  # a retire frees all of a server's devices
        elif kind == "cancel" and len(queue) > 1:
            queue.pop(1 + arg % (len(queue) - 1))  # someone behind the head leaves
        p = serve()
        if queue:
            head = queue[0]
            kept = len(p.kept[head.id])
            if head.id == head_id:
                assert kept >= head_kept, "the first in line lost devices it kept"
            head_id, head_kept = head.id, kept
            free_usable = [
                d
                for d in DEVICES
                if d.uuid not in holders and d in candidates(head.request, DEVICES)
            ]
            assert len(free_usable) < head.request.count, "the head could be served but waits"
        else:
            head_id, head_kept = None, 0


def run(coro):
    return asyncio.run(coro)


def test_queue_positions_join_leave_and_one_place_per_project():
    async def scenario():
        q = GpuQueue()
        a = q.join("alice", "a", "a", GpuRequest(1, "any"))
        b = q.join("bob", "b", "b", GpuRequest(1, "any"))
        assert (q.position(a), q.position(b)) == (1, 2)
        with pytest.raises(AlreadyWaiting):
            q.join("alice", "a", "a", GpuRequest(2, "full"))
        q.leave(a)
        assert q.position(b) == 1 and len(q) == 1

    run(scenario())


def test_waiters_wake_on_change_and_on_cancel():
    async def scenario():
        q = GpuQueue()
        a = q.join("alice", "a", "a", GpuRequest(1, "any"))
        seen = q.version
        woke = asyncio.create_task(q.wait(a, seen, timeout=30))
        await asyncio.sleep(0)
        q.changed()
        await asyncio.wait_for(woke, 5)  # returned well before its 30 s timeout
        seen = q.version
        cancelled = asyncio.create_task(q.wait(a, seen, timeout=30))
        await asyncio.sleep(0)
        assert q.cancel("alice", "a") is True
        with pytest.raises(QueueCancelled):
            await asyncio.wait_for(cancelled, 5)
        assert len(q) == 0 and q.cancel("alice", "a") is False

    run(scenario())


def test_wait_returns_after_its_timeout_without_a_change():
    async def scenario():
        q = GpuQueue()
        a = q.join("alice", "a", "a", GpuRequest(1, "any"))
        await asyncio.wait_for(q.wait(a, q.version, timeout=0.05), 5)
        assert len(q) == 1  # still waiting: only the caller decides to give up

    run(scenario())


def test_cancelling_many_waiting_tasks_twice_never_hangs():
    """A hub shutdown cancels every task (some twice): every waiter must end at once."""

    async def scenario():
        q = GpuQueue()
        waiters = [q.join(f"u{i}", "s", f"p{i}", GpuRequest(1, "any")) for i in range(50)]
        tasks = [asyncio.create_task(q.wait(w, q.version, timeout=60)) for w in waiters]
        await asyncio.sleep(0)
        for t in tasks:
            t.cancel()
        await asyncio.sleep(0)
        for t in tasks:
            t.cancel()
        done, pending = await asyncio.wait(tasks, timeout=5)
        assert not pending
        assert all(t.cancelled() for t in done)

    run(scenario())


def test_a_cancellation_at_the_moment_of_a_change_is_never_lost():
    async def scenario():
        q = GpuQueue()
        w = q.join("alice", "a", "a", GpuRequest(1, "any"))
        lost = 0
        for _ in range(500):
            task = asyncio.create_task(q.wait(w, q.version, timeout=60))
            await asyncio.sleep(0)
            q.changed()  # the wait ends ...
            task.cancel()  # ... as the launch is stopped
            try:
                await task
                lost += 1
            except asyncio.CancelledError:
                pass
        assert lost == 0

    run(scenario())
