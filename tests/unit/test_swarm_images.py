"""The pure parts of image distribution (ds01spawner.swarm.images): the per-(image, node)
single flight and the reading of ``docker load``'s messages. The transfers themselves run against
real engines in tests/integration/test_swarm_ops.py."""

from __future__ import annotations

import threading

import pytest

from ds01spawner.swarm.images import SingleFlight, _Counted, load_errors


def test_concurrent_callers_of_one_key_share_one_run():
    flights = SingleFlight()
    started, release = threading.Event(), threading.Event()
    runs = []

    def transfer():
        runs.append(1)
        started.set()
        assert release.wait(10)
        return "done"

    results = []

    def call():
        results.append(flights.run(("sha256:a", "node2"), transfer))

    first = threading.Thread(target=call)
    first.start()
    assert started.wait(10)
    waiters = [threading.Thread(target=call) for _ in range(3)]
    for t in waiters:
        t.start()
    # a different key is not held up by the running one
    assert flights.run(("sha256:a", "node3"), lambda: "other") == ("other", True)
    release.set()
    for t in [first, *waiters]:
        t.join(10)
    assert len(runs) == 1
    assert sorted(results) == [("done", False)] * 3 + [("done", True)]
    assert flights.running() == []


def test_waiters_get_the_leaders_error_and_the_next_call_runs_again():
    flights = SingleFlight()
    started, release = threading.Event(), threading.Event()
    errors = []

    def failing():
        started.set()
        assert release.wait(10)
        raise RuntimeError("node2 does not answer")

    def call():
        try:
            flights.run("k", failing)
        except RuntimeError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=call)]
    threads[0].start()
    assert started.wait(10)
    threads.append(threading.Thread(target=call))
    threads[1].start()
    release.set()
    for t in threads:
        t.join(10)
    assert errors == ["node2 does not answer"] * 2
    assert flights.run("k", lambda: 7) == (7, True)  # a failure is not remembered


def test_load_errors_are_read_from_the_progress_messages():
    msgs = [
        {"stream": "Loaded image: p:1\n"},
        {"errorDetail": {"message": "no space left"}},
        {"error": "unexpected EOF", "errorDetail": {"message": "unexpected EOF"}},
        b"junk",
    ]
    assert load_errors(msgs) == ["no space left", "unexpected EOF"]
    assert load_errors([{"stream": "Loaded image ID: sha256:1"}]) == []


def test_the_stream_is_counted_chunk_by_chunk():
    seen = []

    def chunks():
        for i in range(3):
            seen.append(i)
            yield b"x" * 10

    counted = _Counted(chunks())
    it = iter(counted)
    next(it)
    assert seen == [0] and counted.bytes == 10  # lazily: one chunk at a time
    assert sum(len(c) for c in it) == 20 and counted.bytes == 30


@pytest.mark.parametrize("n", [1, 8])
def test_many_keys_run_in_parallel(n):
    flights = SingleFlight()
    barrier = threading.Barrier(n, timeout=10)
    out = []
    threads = [
        threading.Thread(target=lambda i=i: out.append(flights.run(i, barrier.wait)))
        for i in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(out) == n  # all met at the barrier: none waited for another key
