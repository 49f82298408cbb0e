"""The engine seam (engine/): DockerEngine's records from Docker's answers, the listing shape the
table code reads, and the hub's one engine made once however many threads ask at once."""

import threading

from ds01spawner.engine.base import (
    EXITED,
    PENDING,
    RUNNING,
    ContainerEngine,
    ServerRecord,
)
from ds01spawner.engine.docker import DockerEngine, _record, _state
from ds01spawner.gpus.table import holders


def inspect(status: str, running: bool, code: int = 0, pid: int = 0, gpus: str = "") -> dict:
    return {
        "Id": "c" * 64,
        "State": {"Status": status, "Running": running, "ExitCode": code, "Pid": pid, "Error": ""},
        "Config": {"Labels": {"ds01.gpus": gpus} if gpus else {}},
    }


def test_state_of_a_running_exited_and_created_container():
    running = _state(inspect("running", True, pid=42, gpus="GPU-a,GPU-b"))
    assert running.status == RUNNING and running.running and running.pid == 42
    assert running.devices == ("GPU-a", "GPU-b")
    exited = _state(inspect("exited", False, code=3))
    assert exited.status == EXITED and not exited.running and exited.exit_code == 3
    created = _state(inspect("created", False))
    assert created.status == PENDING and not created.running


def test_a_record_lists_as_docker_ps_for_the_table():
    ps = {
        "Id": "d" * 64,
        "Names": ["/ds01-alice.p"],
        "Labels": {"ds01.user": "alice", "ds01.gpus": "GPU-x"},
        "State": "running",
        "Created": 1700000000,
    }
    record = _record(ps)
    assert record == ServerRecord(
        id="d" * 64,
        name="ds01-alice.p",
        labels={"ds01.user": "alice", "ds01.gpus": "GPU-x"},
        state="running",
        created=1700000000,
        devices=("GPU-x",),
    )
    assert record.as_listing() == ps
    assert set(holders([record.as_listing()])) == {"GPU-x"}


class FakeClient:
    base_url = "http+docker://localhost"


def test_docker_engine_is_a_container_engine_and_local_on_the_unix_socket():
    engine = DockerEngine(FakeClient(), threads=1)
    assert isinstance(engine, ContainerEngine)
    assert engine.local and engine.creates_then_starts and engine.installs_identity
    engine.client = type("Remote", (), {"base_url": "http+docker://ssh"})()
    assert not engine.local


def test_the_hub_has_one_engine_however_many_threads_ask_at_once(monkeypatch):
    monkeypatch.setattr(DockerEngine, "_shared", None)
    made = []
    gate = threading.Barrier(8)

    def factory():
        made.append(1)
        return FakeClient()

    engines = []

    def ask():
        gate.wait()
        engines.append(DockerEngine.shared(factory, threads=2))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and len({id(e) for e in engines}) == 1
