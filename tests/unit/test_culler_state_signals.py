"""The culler's state file and the parsers of what its signals return."""

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from traitlets.config import Config

from ds01spawner.culler import notices
from ds01spawner.culler.decision import IDLE, Given
from ds01spawner.culler.registration import SCOPES, register_culler
from ds01spawner.culler.signals import (
    GPU_BUSY,
    GPU_IDLE,
    GPU_SILENT,
    GPU_UNKNOWN,
    CgroupCpu,
    CpuMeter,
    GpuMeter,
    SignalError,
    cgroup_cpu_file,
    check_fields,
    cpu_sample,
    docker_time,
    gpu_demand,
    kernels_url,
    next_offset,
    parse_container,
    parse_kernels,
    parse_mountinfo,
    parse_users,
)
from ds01spawner.culler.state import (
    ServerRecord,
    State,
    parse_time,
    read_for_page,
    state_path,
)
from ds01spawner.gpus.simulated import SimulatedInventory, write_state
from ds01spawner.projects.files import ProjectFileError

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)


# ---- the state file -----------------------------------------------------------------------------


def record() -> ServerRecord:
    since = NOW - H
    return ServerRecord(
        started=NOW - 5 * H,
        project="proj",
        container="abc",
        idle_since=since,
        idle_deadline=NOW + 30 * timedelta(minutes=1),
        runtime_deadline=None,
        warnings=[Given(IDLE, 0.75, NOW, NOW + H / 2, since, "Your server ...")],
        activity={"hub": since},
        checked=NOW,
    )


def test_state_round_trips_and_the_page_sees_the_contract(tmp_path):
    path = str(tmp_path / "culler-state.json")
    state = State(servers={"alice/proj": record(), "bob/": record()}, cycles=3, updated=NOW)
    state.save(path)
    again = State.load(path)
    assert again.servers == state.servers and again.cycles == 3
    page = read_for_page(path)
    assert page["alice/proj"] == {
        "idle_deadline": "2026-11-28T12:30:00+00:00",
        "runtime_deadline": None,
        "warnings": [
            {"at": "2026-11-28T12:00:00+00:00", "reason": "idle", "message": "Your server ..."}
        ],
    }
    assert set(page) == {"alice/proj", "bob/"}  # the default server: "<user>/"
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == ["culler-state.json"]  # no temp file left


@pytest.mark.parametrize(
    "content",
    ["", "{", "[]", '{"servers": []}', '{"servers": {"a/b": {"started": "x"}}}', "\x00\xff"],
)
def test_the_page_reader_tolerates_a_corrupt_file(tmp_path, content):
    path = tmp_path / "culler-state.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape") if content else b"")
    assert read_for_page(str(path)) == {}
    assert read_for_page(str(tmp_path / "missing.json")) == {}


def test_odd_entries_are_dropped_not_fatal(tmp_path):
    path = tmp_path / "s.json"
    data = State(servers={"alice/proj": record()}).to_json()
    data["servers"]["alice/proj"]["warnings"] += [{"reason": "boredom"}, "x", {"at": 1}]
    data["servers"]["alice/proj"]["activity"] = ["not", "a", "dict"]
    data["servers"]["nokey"] = data["servers"]["alice/proj"]
    path.write_text(json.dumps(data))
    page = read_for_page(str(path))
    assert list(page) == ["alice/proj"] and len(page["alice/proj"]["warnings"]) == 1


def test_a_corrupt_state_is_set_aside_and_the_culler_starts_empty(tmp_path):
    path = tmp_path / "culler-state.json"
    path.write_text("{not json")
    assert State.load(str(path)).servers == {}
    assert (tmp_path / "culler-state.json.corrupt").read_text() == "{not json"


def test_state_path_from_config_environment_or_working_folder(tmp_path, monkeypatch):
    c = Config()
    c.DS01Culler.state_file = "rel/state.json"
    monkeypatch.chdir(tmp_path)
    assert state_path(c) == str(tmp_path / "rel" / "state.json")
    assert state_path(Config(), {"DS01_STATE_DIR": "/srv/ds01"}) == "/srv/ds01/culler-state.json"
    assert state_path(None, {}) == str(tmp_path / "culler-state.json")


def test_times_parse_with_z_offsets_or_naive_as_utc():
    assert parse_time("2026-11-28T12:00:00.123Z") == NOW.replace(microsecond=123000)
    assert parse_time("2026-11-28T13:00:00+01:00") == NOW
    assert parse_time("2026-11-28T12:00:00") == NOW
    assert parse_time("yesterday") is None and parse_time(None) is None
    assert docker_time("2026-11-28T12:00:00.03699596Z") == NOW.replace(microsecond=36995)
    assert docker_time("0001-01-01T00:00:00Z").year == 1


# ---- registration -------------------------------------------------------------------------------


def test_registration_passes_the_spawner_settings_and_a_least_privilege_role(tmp_path):
    c = Config()
    c.JupyterHub.services = [{"name": "other"}]
    c.DS01Spawner.limits_file = "/etc/ds01/limits.yaml"
    c.DS01Spawner.prefix = "lab"
    c.DS01Spawner.gpu_inventory = "simulated"
    c.DS01Spawner.simulated_gpus = [{"name": "A100", "memory_mib": 1}]
    c.DS01Culler.cull_every = 5
    c.DS01Culler.state_file = str(tmp_path / "s.json")
    register_culler(c)
    register_culler(c)  # again: replaces itself
    names = [s["name"] for s in c.JupyterHub.services]
    assert names == ["other", "ds01-culler"]
    env = c.JupyterHub.services[1]["environment"]
    assert env["DS01_LIMITS_FILE"] == "/etc/ds01/limits.yaml"
    assert env["DS01_CONTAINER_PREFIX"] == "lab" and env["DS01_GPU_INVENTORY"] == "simulated"
    assert json.loads(env["DS01_SIMULATED_GPUS"]) == [{"name": "A100", "memory_mib": 1}]
    assert json.loads(env["DS01_CULLER_CONFIG"]) == {
        "cull_every": 5,
        "state_file": str(tmp_path / "s.json"),
    }
    (role,) = [r for r in c.JupyterHub.load_roles if r["name"] == "ds01-culler"]
    assert role["scopes"] == SCOPES and role["services"] == ["ds01-culler"]
    assert not any(s.startswith("admin") for s in SCOPES) and "read:users" not in SCOPES


def test_registration_can_be_turned_off():
    c = Config()
    register_culler(c)
    c.DS01Culler.enabled = False
    register_culler(c)
    assert c.JupyterHub.services == [] and c.JupyterHub.load_roles == []


def test_the_service_reads_its_settings_from_the_environment(monkeypatch):
    from ds01spawner.culler.service import DS01Culler

    monkeypatch.setenv("DS01_CULLER_CONFIG", json.dumps({"cull_every": 2, "warn_at": [0.9, 0.5]}))
    app = DS01Culler()
    app.initialize(["--DS01Culler.concurrency=3"])
    assert (app.cull_every, app.warn_at, app.concurrency) == (2.0, [0.5, 0.9], 3)
    assert app.settings().warn_at == (0.5, 0.9)


# ---- hub answers --------------------------------------------------------------------------------


def test_users_of_the_hub_become_servers():
    items = [
        {
            "name": "alice",
            "groups": ["students"],
            "servers": {
                "proj": {
                    "started": "2026-11-28T10:00:00.000000Z",
                    "last_activity": "2026-11-28T11:00:00Z",
                    "pending": None,
                    "ready": True,
                },
                "": {"started": None, "last_activity": None, "pending": "spawn", "ready": False},
            },
        },
        {"name": "bob"},  # no servers field (no read:servers): nothing
        "junk",
    ]
    proj, default = parse_users(items)
    assert proj.key == "alice/proj" and proj.groups == ("students",)
    assert proj.started == NOW - 2 * H and proj.last_activity == NOW - H and proj.ready
    assert default.key == "alice/" and default.pending == "spawn" and default.started is None


def test_a_user_model_without_servers_or_groups_means_a_missing_scope():
    check_fields([{"name": "a", "servers": {}, "groups": []}])
    with pytest.raises(SignalError, match="no servers: the culler's role needs read:servers"):
        check_fields([{"name": "a", "groups": []}])
    with pytest.raises(SignalError, match="read:users:groups"):
        check_fields([{"name": "a", "servers": {}}])


def test_pagination_follows_next_until_the_last_page():
    assert next_offset({"_pagination": {"next": {"offset": 200, "limit": 200}}}) == 200
    assert next_offset({"_pagination": {"next": None}}) is None
    assert next_offset({}) is None


# ---- kernels ------------------------------------------------------------------------------------


def test_kernels_busy_and_latest_activity():
    body = [
        {"execution_state": "idle", "last_activity": "2026-11-28T11:00:00Z"},
        {"execution_state": "busy", "last_activity": "2026-11-28T10:00:00Z"},
    ]
    k = parse_kernels(body)
    assert k.busy and k.last_activity == NOW - H
    assert parse_kernels([]) == parse_kernels([{"execution_state": "idle"}])
    assert parse_kernels([{"execution_state": "starting"}]).busy
    with pytest.raises(SignalError):
        parse_kernels({"message": "Forbidden"})


def test_kernels_are_asked_without_counting_as_activity():
    url = kernels_url("http://127.0.0.1:45000/user/alice/proj/")
    assert url == "http://127.0.0.1:45000/user/alice/proj/api/kernels?no_track_activity=1"


# ---- containers ---------------------------------------------------------------------------------


def inspect(env_url="http://127.0.0.1:45000/user/alice/proj/", user="1000:100", networks=None):
    return {
        "Id": "f00d" * 16,
        "Config": {
            "User": user,
            "Env": [f"JUPYTERHUB_SERVICE_URL={env_url}", "JUPYTERHUB_API_TOKEN=secret", "X"],
            "Labels": {"ds01.gpus": "GPU-a,MIG-b", "ds01.project": "proj"},
        },
        "Mounts": [
            {"Type": "bind", "Source": "/srv/x", "Destination": "/data"},
            {"Type": "bind", "Source": "/srv/ws/alice/proj", "Destination": "/workspace"},
        ],
        "NetworkSettings": {"Networks": networks or {"host": {"IPAddress": ""}}},
    }


def test_a_container_gives_its_workspace_owner_url_and_gpus():
    c = parse_container(inspect())
    assert c.workspace == "/srv/ws/alice/proj" and (c.uid, c.gid) == (1000, 100)
    assert c.server_url == "http://127.0.0.1:45000/user/alice/proj/"
    assert c.gpus == ("GPU-a", "MIG-b") and c.project == "proj"


def test_a_server_on_a_docker_network_is_reached_at_its_container_address():
    c = parse_container(
        inspect("http://0.0.0.0:8888/user/a/", networks={"lab": {"IPAddress": "172.18.0.5"}})
    )
    assert c.server_url == "http://172.18.0.5:8888/user/a/"
    assert parse_container(inspect("http://0.0.0.0:8888/user/a/")).server_url is None


def test_a_container_user_by_name_has_no_numeric_owner():
    assert parse_container(inspect(user="jovyan")).uid is None
    assert (
        parse_container(inspect(user="1234")).uid,
        parse_container(inspect(user="1234")).gid,
    ) == (
        1234,
        1234,
    )


# ---- CPU ----------------------------------------------------------------------------------------


def stats(seconds: float, cpu_ns: int) -> dict:
    t = NOW + timedelta(seconds=seconds)
    return {
        "read": t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z",
        "cpu_stats": {"cpu_usage": {"total_usage": cpu_ns}},
    }


def test_cpu_use_is_the_difference_between_two_samples():
    meter = CpuMeter()
    assert meter.update("c1", cpu_sample(stats(0, 10**9))) is None  # the first says nothing
    assert meter.update("c1", cpu_sample(stats(60, 10**9 + 30 * 10**9))) == pytest.approx(0.5)
    assert meter.update("c1", cpu_sample(stats(120, 40 * 10**9))) == pytest.approx(9 / 60)
    not_running = {"read": "0001-01-01T00:00:00Z", "cpu_stats": {"cpu_usage": {"total_usage": 0}}}
    assert cpu_sample(not_running) is None and meter.update("c2", None) is None
    meter.forget_except(["c2"])
    assert meter.update("c1", cpu_sample(stats(180, 50 * 10**9))) is None  # a first sample again


MOUNTINFO_HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
MOUNTINFO_V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
PROC_CGROUP_V1 = "3:cpuset:/docker/abc\n2:cpuacct:/docker/abc\n1:cpu:/docker/abc\n0::/docker/abc\n"
PROC_CGROUP_V2 = "0::/system.slice/docker-abc.scope\n"


def test_the_cgroup_cpu_file_of_a_container_v1_hybrid_and_v2():
    hybrid = parse_mountinfo(MOUNTINFO_HYBRID)
    assert hybrid == {
        "cpuacct": ("/sys/fs/cgroup/cpuacct", "/"),
        "unified": ("/sys/fs/cgroup/unified", "/"),
    }
    assert (
        cgroup_cpu_file(PROC_CGROUP_V1, hybrid) == "/sys/fs/cgroup/cpuacct/docker/abc/cpuacct.usage"
    )
    v2 = parse_mountinfo(MOUNTINFO_V2)
    assert cgroup_cpu_file(PROC_CGROUP_V2, v2) == (
        "/sys/fs/cgroup/system.slice/docker-abc.scope/cpu.stat"
    )
    assert cgroup_cpu_file(PROC_CGROUP_V1, {}) is None


def test_cgroup_cpu_time_is_read_from_the_files_or_none(tmp_path):
    proc, cg = tmp_path / "proc", tmp_path / "cg"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(f"30 23 0:26 / {cg} rw - cgroup2 cgroup2 rw\n")
    (proc / "42").mkdir()
    (proc / "42" / "cgroup").write_text(PROC_CGROUP_V2)
    (cg / "system.slice" / "docker-abc.scope").mkdir(parents=True)
    (cg / "system.slice" / "docker-abc.scope" / "cpu.stat").write_text(
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"
    )
    reader = CgroupCpu(str(proc))
    assert reader.read(42) == 1_500_000
    assert reader.read(43) is None  # gone: Docker is asked instead


# ---- GPUs ---------------------------------------------------------------------------------------

A100 = {"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960}


def test_gpu_utilization_is_averaged_over_the_window_per_device(tmp_path):
    state = tmp_path / "gpus.json"
    inv = SimulatedInventory([A100, A100], state_file=str(state))
    gpu0, gpu1 = (d.uuid for d in inv.devices())
    meter = GpuMeter(inv, window=300, busy_percent=10)
    started = NOW - H

    def at(minutes: float, **pct):
        write_state(str(state), {k[-1]: {"utilization_pct": v} for k, v in pct.items()})
        meter.sample(NOW + timedelta(minutes=minutes))
        return meter.state_of([gpu0], started, NOW + timedelta(minutes=minutes))

    assert at(0, g0=90) == GPU_BUSY
    assert at(1, g0=0) == GPU_BUSY  # mean 45 over the window
    assert at(4, g0=0) == GPU_BUSY  # 90, 0, 0: mean 30
    assert at(6, g0=0) == GPU_IDLE  # the 90 is out of the 5-minute window
    assert meter.state_of([gpu1], started, NOW + timedelta(minutes=6)) == GPU_IDLE
    assert meter.state_of([], started, NOW) == GPU_SILENT
    # samples taken before a server started belong to the previous holder
    assert at(7, g0=50) == GPU_BUSY
    assert (
        meter.state_of([gpu0], NOW + timedelta(minutes=7, seconds=1), NOW + timedelta(minutes=7))
        == GPU_SILENT
    )


def test_a_lost_device_or_a_failing_inventory_is_unknown_and_mig_is_silent(tmp_path):
    state = tmp_path / "gpus.json"
    mig = {**A100, "mig_profiles": ["3g.20gb"]}
    inv = SimulatedInventory([A100, mig], state_file=str(state))
    gpu0, slice0 = (d.uuid for d in inv.devices())
    meter = GpuMeter(inv, window=300, busy_percent=10)
    meter.sample(NOW)
    assert meter.state_of([slice0], NOW - H, NOW) == GPU_SILENT  # MIG: no utilization
    write_state(str(state), {"0": {"lost": True}})
    meter.sample(NOW)
    assert meter.state_of([gpu0], NOW - H, NOW) == GPU_UNKNOWN

    class Broken:
        def devices(self):
            raise RuntimeError("NVML_ERROR_UNKNOWN")

    broken = GpuMeter(Broken(), 300, 10)
    broken.sample(NOW)
    assert "NVML_ERROR_UNKNOWN" in broken.failed
    assert broken.state_of([gpu0], NOW - H, NOW) == GPU_UNKNOWN


def test_gpu_demand_counts_held_capacity_in_equivalents():
    inv = SimulatedInventory([A100, {**A100, "mig_profiles": ["3g.20gb", "2g.10gb", "2g.10gb"]}])
    devices = inv.devices()
    gpu, s3, s2a, _ = devices
    containers = [
        {"State": "running", "Labels": {"ds01.gpus": gpu.uuid}},
        {"State": "running", "Labels": {"ds01.gpus": f"{s3.uuid},{s2a.uuid}"}},
        {"State": "exited", "Labels": {"ds01.gpus": devices[3].uuid}},  # holds nothing
    ]
    assert gpu_demand(devices, containers) == pytest.approx((1 + 5 / 7) / 2)
    assert gpu_demand([], containers) == 0.0


# ---- the project folder -------------------------------------------------------------------------


def test_keep_alive_age_and_notices_in_the_project_folder(tmp_path):
    project = tmp_path / "ws" / "proj"
    project.mkdir(parents=True)
    assert notices.keep_alive_mtime(str(project)) is None
    (project / ".keep-alive").touch()
    os.utime(project / ".keep-alive", (NOW.timestamp(), NOW.timestamp()))
    assert notices.keep_alive_mtime(str(project)) == NOW
    line = notices.notice_line(NOW, "WARNING", "idle", "two\nlines")
    assert line == "2026-11-28T12:00:00Z  WARNING  idle  two lines\n"
    uid, gid = os.getuid(), os.getgid()
    notices.append_notice(str(project), uid, gid, line)
    notices.append_notice(str(project), uid, gid, line)
    assert (project / ".ds01" / "notices.log").read_text() == line * 2


def test_a_link_in_place_of_the_project_folder_is_never_followed(tmp_path):
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (elsewhere / ".keep-alive").touch()
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "proj").symlink_to(elsewhere)
    # the user's own folder and link (as root, a root's link in a root-only folder is trusted)
    os.chown(ws, 12345, 12345)
    os.lchown(ws / "proj", 12345, 12345)
    with pytest.raises(ProjectFileError):
        notices.keep_alive_mtime(str(ws / "proj"))
    with pytest.raises(ProjectFileError):
        notices.append_notice(str(ws / "proj"), os.getuid(), os.getgid(), "x\n")
    assert not (elsewhere / ".ds01").exists()
    real = tmp_path / "real"
    real.mkdir()
    (real / ".ds01").symlink_to(elsewhere)  # a link inside the project: refused too
    with pytest.raises(ProjectFileError):
        notices.append_notice(str(real), os.getuid(), os.getgid(), "x\n")
    assert list(Path(elsewhere).iterdir()) == [elsewhere / ".keep-alive"]
