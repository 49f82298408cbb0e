"""The builder with a fake Docker API: one build per content hash, streaming, failure, timeout,
the bounded pool; the compat check's parsing and cache; housekeeping decisions."""

import asyncio
import threading
import time

import pytest

from ds01spawner.images import builder as builder_module
from ds01spawner.images import compat, housekeeping
from ds01spawner.images.builder import (
    BuildError,
    BuildSpec,
    BuildTimeout,
    EngineError,
    ImageBuilder,
)
from ds01spawner.images.context import ContextChanged

KEY = "a" * 64


class FakeAPI:
    """``build`` yields the scripted chunks; ``"WAIT"`` blocks until ``release`` is set or the
    running container is killed (then yields the engine's error, as a killed RUN step does)."""

    def __init__(self, script, release=None):
        self.script = script
        self.release = release or threading.Event()
        self.killed: list[str] = []
        self.kill_event = threading.Event()
        self.builds: list[dict] = []

    def factory(self, timeout):
        return self

    def build(self, **kw):
        kw["context"] = kw["fileobj"].read()
        self.builds.append(kw)
        for chunk in self.script:
            if chunk == "WAIT":
                while not (self.release.is_set() or self.kill_event.is_set()):
                    time.sleep(0.01)
                if self.kill_event.is_set():
                    yield {"errorDetail": {"message": "returned a non-zero code: 137"}}
                    return
                continue
            yield chunk

    def inspect_image(self, tag):
        return {"Id": "sha256:" + "f" * 64}

    def kill(self, cid):
        self.killed.append(cid)
        self.kill_event.set()

    def close(self):
        pass


OK_SCRIPT = [
    {"stream": "Step 1/2 : FROM ds01/base:latest\n"},
    {"stream": " ---> a9f492361356\n"},
    {"stream": "Step 2/2 : RUN echo hello\n"},
    {"stream": " ---> Running in 0123456789ab\n"},
    {"stream": "hel"},
    {"stream": "lo\rprogress 50%\rprogress 100%\n"},
    {"aux": {"ID": "sha256:" + "b" * 64}},
    {"stream": "Successfully built bbbbbbbbbbbb\n"},
]


def spec(key=KEY, tag="ds01-alice/p:aaaa", timeout=30.0, written=None):
    def write(f):
        f.write(b"context-bytes")
        return written or key

    return BuildSpec(key=key, tag=tag, write_context=write, timeout=timeout, who="user=alice")


def test_one_build_for_many_waiters_and_every_waiter_sees_every_line():
    api = FakeAPI(OK_SCRIPT[:2] + ["WAIT"] + OK_SCRIPT[2:])
    builder = ImageBuilder(api.factory, threads=2)

    async def main():
        seen = [[] for _ in range(8)]
        job = builder.start(spec())
        waits = [asyncio.ensure_future(builder.wait(job, seen[0].append))]
        await asyncio.sleep(0.05)
        for i in range(1, 8):  # arrive while the build runs: all join it
            assert builder.job_for(KEY) is job
            waits.append(asyncio.ensure_future(builder.wait(builder.job_for(KEY), seen[i].append)))
        api.release.set()
        results = await asyncio.gather(*waits)
        return job, seen, results

    job, seen, results = asyncio.run(main())
    assert builder.builds_started == 1 and len(api.builds) == 1
    assert {r.image_id for r in results} == {"sha256:" + "b" * 64}
    assert results[0].steps == 2
    expected = [
        "Step 1/2 : FROM ds01/base:latest",
        " ---> a9f492361356",
        "Step 2/2 : RUN echo hello",
        " ---> Running in 0123456789ab",
        "hello",
        "progress 50%",
        "progress 100%",
        "Successfully built bbbbbbbbbbbb",
    ]
    assert all(s == expected for s in seen), seen
    assert job.lines() == expected
    kw = api.builds[0]
    assert kw["custom_context"] and kw["rm"] and kw["forcerm"] and not kw["pull"]
    assert kw["context"] == b"context-bytes" and kw["tag"] == "ds01-alice/p:aaaa"
    assert [e[1] for e in builder.events].count("join") == 7


def test_failed_step_gives_step_and_output_tail():
    script = [
        {"stream": "Step 1/2 : FROM ds01/base:latest\n"},
        {"stream": "Step 2/2 : RUN pip install nothing\n"},
        {"stream": " ---> Running in 0123456789ab\n"},
        {"stream": "ERROR: no such package\n"},
        {"errorDetail": {"message": "The command returned a non-zero code: 1"}, "error": "x"},
    ]
    builder = ImageBuilder(FakeAPI(script).factory)

    async def main():
        return await builder.wait(builder.start(spec()))

    with pytest.raises(BuildError) as e:
        asyncio.run(main())
    assert e.value.step == "Step 2/2 : RUN pip install nothing"
    assert e.value.tail == ["ERROR: no such package", "The command returned a non-zero code: 1"]
    assert not isinstance(e.value, BuildTimeout)
    assert builder.job_for(KEY) is None  # a failed build is tried again at the next launch


def test_timeout_stops_waiting_at_once_and_kills_the_running_step():
    script = [
        {"stream": "Step 1/2 : FROM ds01/base:latest\n"},
        {"stream": "Step 2/2 : RUN sleep 1000\n"},
        {"stream": " ---> Running in 0123456789ab\n"},
        "WAIT",
        {"aux": {"ID": "sha256:x"}},
    ]
    api = FakeAPI(script)
    builder = ImageBuilder(api.factory)

    async def main():
        job = builder.start(spec(timeout=0.3))
        t0 = time.monotonic()
        with pytest.raises(BuildTimeout) as e:
            await builder.wait(job)
        return job, e.value, time.monotonic() - t0

    job, err, waited = asyncio.run(main())
    assert waited < 1.5
    assert err.step == "Step 2/2 : RUN sleep 1000" and "stopped after" in str(err)
    assert job.thread_done.wait(5) and api.killed[0] == "0123456789ab"
    assert [e[1] for e in builder.events] == ["start", "timeout"]


def test_a_cancelled_waiter_never_cancels_the_build():
    api = FakeAPI(["WAIT", *OK_SCRIPT])
    builder = ImageBuilder(api.factory)

    async def main():
        job = builder.start(spec())
        first = asyncio.ensure_future(builder.wait(job))
        second = asyncio.ensure_future(builder.wait(job))
        await asyncio.sleep(0.05)
        first.cancel()
        api.release.set()
        return await second, first

    result, first = asyncio.run(main())
    assert result.image_id.startswith("sha256:b") and first.cancelled()


def test_context_changed_while_writing_is_reported():
    builder = ImageBuilder(FakeAPI(OK_SCRIPT).factory)

    async def main():
        return await builder.wait(builder.start(spec(written="c" * 64)))

    with pytest.raises(ContextChanged):
        asyncio.run(main())


def test_pool_bounds_concurrent_builds_and_the_loop_stays_free():
    release = threading.Event()
    api = FakeAPI(["WAIT", *OK_SCRIPT], release)
    builder = ImageBuilder(api.factory, threads=1)

    async def main():
        a = builder.start(spec(key="1" * 64, tag="r:1"))
        b = builder.start(spec(key="2" * 64, tag="r:2"))
        wait_a = asyncio.ensure_future(builder.wait(a))
        wait_b = asyncio.ensure_future(builder.wait(b))
        t0 = time.monotonic()
        for _ in range(10):
            await asyncio.sleep(0.01)  # the loop is not blocked by the running build
        loop_time = time.monotonic() - t0
        started = len(api.builds)
        release.set()
        await asyncio.gather(wait_a, wait_b)
        return started, loop_time

    started, loop_time = asyncio.run(main())
    assert started == 1 and loop_time < 1.0
    assert len(api.builds) == 2


def test_a_just_finished_build_is_joined_not_repeated(monkeypatch):
    from ds01spawner.images import builder as builder_module

    builder = ImageBuilder(FakeAPI(OK_SCRIPT).factory)

    async def main():
        job = builder.start(spec())
        await builder.wait(job)
        return job

    job = asyncio.run(main())
    assert builder.job_for(KEY) is job
    monkeypatch.setattr(builder_module, "RECENT_SECONDS", -1)
    assert builder.job_for(KEY) is None


def test_very_long_output_keeps_head_and_tail():
    from ds01spawner.images import output

    n = output.HEAD_LINES + output.TAIL_LINES + 5000
    script = [{"stream": f"line {i}\n"} for i in range(n)]
    builder = ImageBuilder(FakeAPI([*script, *OK_SCRIPT]).factory)

    async def main():
        job = builder.start(spec())
        await builder.wait(job)
        return job, job.lines()

    job, lines = asyncio.run(main())
    assert lines[0] == "line 0" and lines[-1] == "Successfully built bbbbbbbbbbbb"
    assert any("lines left out" in line for line in lines)
    assert len(lines) <= output.HEAD_LINES + output.TAIL_LINES + 1
    job.trim()  # what a finished build keeps
    assert len(job.lines()) == output.FINISHED_TAIL_LINES + 1


def test_output_without_newlines_is_one_cut_line_and_stripped_of_escapes():
    from ds01spawner.images import output

    big = [{"stream": "\x1b[31mx" + "y" * 65535} for _ in range(64)]  # 4 MiB, no newline
    script = [OK_SCRIPT[0], *big, {"stream": "\n\x1b]0;title\x07done \x1b[1mbold\x1b[0m\n"}]
    builder = ImageBuilder(FakeAPI([*script, *OK_SCRIPT[6:]]).factory)
    seen = []

    async def main():
        job = builder.start(spec())
        await builder.wait(job, seen.append)
        return job.lines()

    lines = asyncio.run(main())
    long = [line for line in lines if line.startswith("x")]
    assert len(long) == 1 and len(long[0]) < output.MAX_LINE + 60
    assert long[0].endswith(f"[... {64 * 65541 - output.MAX_LINE} characters cut]")
    assert "\x1b" not in long[0] and "done bold" in lines
    assert seen == lines


# ---- fairness: one build per user, the timeout from the first step -----------------------------


def owned(owner, key, timeout=30.0):
    s = spec(key=key, tag=f"ds01-{owner}/p:{key[:4]}", timeout=timeout)
    s.owner = owner
    return s


def test_one_build_per_user_runs_the_others_wait_their_turn_without_a_thread():
    release = threading.Event()
    api = FakeAPI(["WAIT", *OK_SCRIPT], release)
    builder = ImageBuilder(api.factory, threads=2)

    async def main():
        seen = []
        a1 = builder.start(owned("alice", "1" * 64))
        a2 = builder.start(owned("alice", "2" * 64))
        waits = [
            asyncio.ensure_future(builder.wait(a1)),
            asyncio.ensure_future(builder.wait(a2, seen.append)),
        ]
        b = builder.start(owned("bob", "3" * 64))  # bob is not behind alice's second build
        waits.append(asyncio.ensure_future(builder.wait(b)))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(api.builds) == 2:
                break
        running = sorted(kw["tag"] for kw in api.builds)
        states = (a1.state, a2.state, b.state)
        release.set()
        await asyncio.gather(*waits)
        return running, states, seen

    running, states, seen = asyncio.run(main())
    assert running == ["ds01-alice/p:1111", "ds01-bob/p:3333"]
    assert states == ("running", "waiting", "running")
    assert seen[0] == builder_module.WAITING_MESSAGE
    assert len(api.builds) == 3


def test_the_timeout_counts_from_the_first_step_not_from_submission():
    release = threading.Event()
    api = FakeAPI(["WAIT", *OK_SCRIPT], release)
    builder = ImageBuilder(api.factory, threads=1)

    async def main():
        slow = builder.start(owned("mallory", "1" * 64))
        other = builder.start(owned("alice", "2" * 64, timeout=0.3))
        first = asyncio.ensure_future(builder.wait(slow))
        second = asyncio.ensure_future(builder.wait(other))
        await asyncio.sleep(0.8)  # far past alice's 0.3 s, while she waits for the pool
        assert not second.done()
        release.set()
        return await first, await second

    done_slow, done_other = asyncio.run(main())
    assert done_other.image_id.startswith("sha256:b") and done_other.seconds < 0.3


def test_a_waiting_build_nobody_waits_for_is_dropped():
    release = threading.Event()
    api = FakeAPI(["WAIT", *OK_SCRIPT], release)
    builder = ImageBuilder(api.factory, threads=2)

    async def main():
        a1 = builder.start(owned("alice", "1" * 64))
        a2 = builder.start(owned("alice", "2" * 64))
        w1 = asyncio.ensure_future(builder.wait(a1))
        w2 = asyncio.ensure_future(builder.wait(a2))
        await asyncio.sleep(0.05)
        w2.cancel()  # the launch gave up
        await asyncio.sleep(0)
        release.set()
        await w1
        with pytest.raises(EngineError):
            await a2.future
        return builder.job_for("2" * 64)

    assert asyncio.run(main()) is None
    assert len(api.builds) == 1


def test_engine_parameters_reach_the_build():
    api = FakeAPI(OK_SCRIPT)
    builder = ImageBuilder(api.factory)
    s = spec()
    s.engine_params = {"cpuquota": 200000, "cpuperiod": 100000}
    s.container_limits = {"memory": 1 << 30, "memswap": 1 << 30}

    async def main():
        await builder.wait(builder.start(s))

    asyncio.run(main())
    assert api.builds[0]["extra_params"] == {"cpuquota": 200000, "cpuperiod": 100000}
    assert api.builds[0]["container_limits"] == {"memory": 1 << 30, "memswap": 1 << 30}


# ---- compat ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output,version",
    [("6.1.1\n", "6.1.1"), ("some warning\n5.2.0\n", "5.2.0"), ("v6.0.0b1", "6.0.0b1"), ("", None)],
)
def test_parse_version(output, version):
    assert compat.parse_version(output) == version


def test_judge_and_messages():
    assert compat.judge(0, "6.1.1\n", "6.1.1").ok
    assert compat.judge(0, "6.0.2\n", "6.1.1").ok
    old = compat.judge(0, "5.2.1\n", "6.1.1")
    assert not old.ok and old.version == "5.2.1"
    msg = compat.problem_sentence(old, "6.1.1", "ds01/base:latest")
    assert "5.2.1" in msg and "jupyterhub==6.1.1" in msg and "FROM the DS01 base image" in msg
    missing = compat.judge(127, "exec: jupyterhub-singleuser: not found", "6.1.1")
    assert not missing.ok and missing.version is None
    msg = compat.problem_sentence(missing, "6.1.1", "ds01/base:latest")
    assert "cannot run jupyterhub-singleuser" in msg and "not found" in msg
    assert not compat.judge(1, "6.1.1", "6.1.1").ok  # a version printed by a failing run


def test_compat_checks_are_shared_and_cached():
    checker = compat.CompatChecker()
    runs = []

    async def run():
        runs.append(1)
        await asyncio.sleep(0.05)
        return compat.CompatResult(True, "6.1.1", "")

    async def main():
        results = await asyncio.gather(*(checker.check("sha256:1", run) for _ in range(5)))
        again = await checker.check("sha256:1", run)
        return results, again

    results, again = asyncio.run(main())
    assert len(runs) == 1 and checker.checks_run == 1
    assert all(r.ok for r in results) and again.ok


def test_an_inconclusive_check_is_not_cached():
    checker = compat.CompatChecker()

    async def run():
        return compat.CompatResult(False, None, "(no answer)", final=False)

    async def main():
        await checker.check("sha256:2", run)
        await checker.check("sha256:2", run)

    asyncio.run(main())
    assert checker.checks_run == 2 and checker.cached("sha256:2") is None


# ---- housekeeping decisions --------------------------------------------------------------------


class FakeEngine:
    def __init__(self, images, containers=()):
        self._images = images
        self._containers = list(containers)
        self.removed: list[str] = []

    def images(self, filters):
        return self._images

    def containers(self, all):
        return [{"ImageID": i} for i in self._containers]

    def remove_image(self, ref):
        self.removed.append(ref)


def img(ref, created, image_id=None):
    return {"Id": image_id or f"sha256:{ref}", "RepoTags": [ref], "Created": created, "Size": 1}


def test_prune_keeps_newest_and_current_and_in_use():
    engine = FakeEngine(
        [
            img("ds01-alice/p:1", 1),
            img("ds01-alice/p:2", 2),
            img("ds01-alice/p:3", 3),
            img("ds01-alice/p:4", 4),
            img("ds01-alice/p:5", 5),
            img("ds01-alice/other:9", 9),
        ],
        containers=["sha256:ds01-alice/p:2"],
    )
    deleted = housekeeping.prune_project(engine, "ds01", "alice", "p", 2, "ds01-alice/p:1")
    # kept: the current one (1) and the newest (5); 2 is in use; 3 and 4 go
    assert sorted(deleted) == ["ds01-alice/p:3", "ds01-alice/p:4"]
    assert engine.removed == deleted


def test_list_ignores_refs_of_other_users_and_other_forms():
    engine = FakeEngine(
        [
            img("ds01-alice/p:1", 1),
            {"Id": "sha256:x", "RepoTags": ["ds01-alice/p:2", "ds01-alice2/p:2"], "Created": 2},
            img("ds01-alice/p/deeper:3", 3),
        ]
    )
    listed = housekeeping.list_images(engine, "ds01", "alice")
    assert [i.ref for i in listed] == ["ds01-alice/p:2", "ds01-alice/p:1"]
    assert all(i.project == "p" for i in listed)


def test_delete_user_images_keeps_images_in_use():
    engine = FakeEngine([img("ds01-bob/a:1", 1), img("ds01-bob/b:1", 2)], ["sha256:ds01-bob/b:1"])
    deleted, kept = housekeeping.delete_user_images(engine, "ds01", "bob")
    assert deleted == ["ds01-bob/a:1"] and kept == ["ds01-bob/b:1"]


# ---- what the spawn page gets from a build -----------------------------------------------------


def test_build_lines_become_progress_events(monkeypatch):
    from types import SimpleNamespace

    from ds01spawner.spawner import build_steps
    from ds01spawner.spawner.image_steps import ImageSteps
    from ds01spawner.spawner.progress import ProgressLog

    monkeypatch.setattr(build_steps, "MAX_PROGRESS_LINES", 3)

    async def main():
        fake = SimpleNamespace(progress_log=ProgressLog())
        listener = ImageSteps._build_listener(fake)
        for line in [
            "Step 1/4 : FROM ds01/base:latest",
            " ---> a9f492361356",
            "Step 2/4 : RUN pip install x",
            " ---> Running in 0123456789ab",
            "<script>alert(1)</script>",
            "two",
            "three",
            "four",
            "five",
            "Removing intermediate container 0123456789ab",
            "Step 3/4 : ENV A=1",
            "Step 4/4 : LABEL ds01.image.digest=abc",  # DS01's own step: not shown
        ]:
            listener(line)
        return fake.progress_log.events

    events = asyncio.run(main())
    shown = [(e["progress"], e["message"]) for e in events]
    assert shown == [
        (15, "Step 1/3 : FROM ds01/base:latest"),
        (23, "Step 2/3 : RUN pip install x"),
        (23, "<script>alert(1)</script>"),
        (23, "two"),
        (23, "three"),
        (23, "(more output in .ds01/build.log in your project folder)"),
        (32, "Step 3/3 : ENV A=1"),
    ]
    assert events[2]["html_message"] == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_steps_are_shown_as_the_user_wrote_the_dockerfile():
    from ds01spawner.spawner.image_steps import ImageSteps

    assert ImageSteps.shown_step("Step 2/3 : RUN make") == "Step 2/2 : RUN make"
    assert ImageSteps.shown_step("Step 3/3 : LABEL ds01.image.digest=" + "a" * 64) is None
    assert ImageSteps.shown_step("Step 1/1 : FROM x") == "Step 1/1 : FROM x"  # never below n
    assert ImageSteps.shown_step("output line") == "output line"


# ---- the build cgroup (pids) -------------------------------------------------------------------


def test_build_cgroup_v1_and_v2_and_systemd(tmp_path):
    from ds01spawner.images.cgroups import build_cgroup, cgroup_name

    v1 = tmp_path / "v1"
    (v1 / "pids").mkdir(parents=True)
    name = build_cgroup("ds01", "alice", 256, "cgroupfs", str(v1))
    assert name == cgroup_name("ds01", "alice") and name.startswith("/ds01-build-")
    assert (v1 / "pids" / name.lstrip("/") / "pids.max").read_text() == "256"
    assert cgroup_name("ds01", "bob") != name and cgroup_name("ds01", "../x").count("/") == 1
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu memory pids\n")
    (v2 / "cgroup.subtree_control").write_text("cpu memory pids\n")
    name = build_cgroup("ds01", "alice", 100, "cgroupfs", str(v2))
    assert (v2 / name.lstrip("/") / "pids.max").read_text() == "100"
    assert build_cgroup("ds01", "alice", 100, "systemd", str(v2)) is None
    assert build_cgroup("ds01", "alice", 0, "cgroupfs", str(v2)) is None


# ---- output: lines, escapes, the kept log ------------------------------------------------------


def test_lines_do_not_depend_on_how_the_output_is_chunked():
    import random

    from ds01spawner.images.output import LineSplitter

    text = "".join(
        random.Random(7).choice(["a", "b", "\n", "\r", "\r\n", "\x1b[2K", "\t", " "])
        for _ in range(20000)
    )
    whole = LineSplitter(max_line=50)
    expected = whole.feed(text) + whole.flush()
    rng = random.Random(8)
    for _ in range(20):
        split, out, i = LineSplitter(max_line=50), [], 0
        while i < len(text):
            n = rng.randint(1, 300)
            out += split.feed(text[i : i + n])
            i += n
        assert out + split.flush() == expected
    assert all("\x1b" not in line and "\r" not in line for line in expected)


@pytest.mark.parametrize(
    "raw,shown",
    [
        ("\x1b[1;31mred\x1b[0m", "red"),
        ("\x1b]0;evil title\x07text", "text"),
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("a\x08b\x00c\x7fd\x9b2Je", "abcde"),
        ("tab\tstays", "tab\tstays"),
        ("\x1b(Bplain\x1b=", "plain"),
    ],
)
def test_clean_strips_terminal_sequences(raw, shown):
    from ds01spawner.images.output import clean

    assert clean(raw) == shown


def test_kept_log_stays_within_its_byte_budget():
    from ds01spawner.images.output import KeptLog

    kept = KeptLog(head_lines=10, head_bytes=100, tail_lines=1000, tail_bytes=1000)
    for i in range(10000):
        kept.add(f"{i:04d}" + "x" * 45)
    assert kept.size() <= 1100 and kept.count == 10000
    lines = kept.lines()
    assert lines[0].startswith("0000") and lines[-1].startswith("9999")
    assert "lines left out" in lines[2]


def test_the_image_check_container_runs_with_limits():
    class Api:
        def create_host_config(self, **kw):
            self.host_config = kw
            return kw

        def create_container(self, image, **kw):
            self.labels = kw["labels"]
            return {"Id": "c1"}

        def inspect_image(self, image):
            return {"Config": {"Labels": {"ds01.user": "victim"}}}

        def start(self, c):
            pass

        def wait(self, c, timeout):
            return {"StatusCode": 0}

        def logs(self, c, **kw):
            return b"6.1.1\n"

        def remove_container(self, c, force):
            pass

    api = Api()
    result = compat.run_check(api, "sha256:x", "1000:100", "ds01", limits=compat.CHECK_LIMITS)
    assert result.version == "6.1.1"
    hc = api.host_config
    assert hc["pids_limit"] == 128 and hc["nano_cpus"] == 10**9 and hc["mem_limit"] == 1 << 30
    assert hc["network_mode"] == "none" and hc["cap_drop"] == ["ALL"]
    assert api.labels["ds01.user"] == "" and api.labels["ds01.managed"] == "false"


def test_a_flood_in_one_chunk_keeps_steps_and_says_what_it_did_not_show():
    from ds01spawner.images import job as job_module

    n = job_module.MAX_PENDING + 500
    flood = "".join(f"out {i}\n" for i in range(n))
    chunk = "Step 1/2 : FROM ds01/base:latest\n" + flood + "Step 2/2 : RUN x\nafter\n"
    api = FakeAPI(["WAIT", {"stream": chunk}, *OK_SCRIPT[6:]])
    builder = ImageBuilder(api.factory)
    seen = []

    async def main():
        job = builder.start(spec())
        seen.append(job)
        # the flood arrives once the listener has subscribed (``wait`` subscribes before it
        # first yields): a late subscriber is given the kept log instead, whatever its size
        asyncio.get_running_loop().call_soon(api.release.set)
        await builder.wait(job, seen.append)
        return job

    job = asyncio.run(main())
    shown = seen[1:]
    assert "Step 2/2 : RUN x" in shown and "Step 1/2 : FROM ds01/base:latest" in shown
    assert any(line.endswith("lines of output not shown here) ...") for line in shown)
    assert len(shown) < job_module.MAX_PENDING + 20
    assert job.step_line() == "Step 2/2 : RUN x" and job.last_output() == ["after"]
    assert job.log.count == n + 4  # every line: 2 steps, "after", "Successfully built ..."


def test_fake_step_lines_cannot_grow_the_queue_past_its_cap():
    """Found in review: every late line starting with "Step " was queued; a RUN that prints
    "Step 1/1 : x" without end grew the queue (and the progress page) without bound."""
    from ds01spawner.images import job as job_module

    loop = asyncio.new_event_loop()
    try:
        job = job_module.BuildJob(spec(), loop)  # the loop never runs: nothing is delivered
        for _ in range(50):
            job.record_many(["Step 1/1 : x"] * 1000)
        assert len(job._pending) <= job_module.MAX_PENDING + job_module.MAX_LATE_STEPS
        assert job._skipped >= 50 * 1000 - len(job._pending)
        # control: a real new step arriving past the cap is still queued for the page
        fresh = job_module.BuildJob(spec(), loop)
        fresh.record_many(["out"] * job_module.MAX_PENDING + ["noise", "Step 2/2 : RUN y"])
        assert fresh._pending[-1][1] == "Step 2/2 : RUN y"
    finally:
        loop.close()
