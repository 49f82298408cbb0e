"""Network isolation on the host network (finding 9 of issue 14), attacked from inside a real
user container, on this machine's loopback only.

Two hubs: ``guarded`` with ``network_isolation = "uid-firewall"`` (and the port-owner check),
``open`` with both off (the control: the same attacks succeed there). Each hub's users run as a
uid of their own (``user_uid``), and the guarded hub's firewall covers only that uid and its own
server port range, so no other test's containers are affected; the chain is removed at the end.

Attacks, from bob's container (``docker exec`` as the container's user):
- connect to alice's server port directly (bypassing the proxy);
- connect to the proxy's API port;
- bind the port of carol's server while it starts (carol's image is slow to listen, so the
  attacker wins the race deterministically) and serve carol's traffic.
"""

from __future__ import annotations

import json
import random
import secrets

import pytest
import requests

from ds01spawner.netguard import chain_name, remove_firewall

from .hub import ds01_containers, wait_for
from .test_images import failure, ready, write_project

SLOW = (
    "FROM ds01/base:latest\n"
    f"# {secrets.token_hex(4)}\n"
    'RUN printf \'#!/bin/sh\\ncase "$*" in *--version*) exec "$@";; esac\\nexec sleep 300\\n\''
    " > /usr/local/bin/slow && chmod 755 /usr/local/bin/slow\n"
    'ENTRYPOINT ["/usr/local/bin/slow"]\n'
)
PROBE = """
import socket, sys, json
out = {}
for name, port in json.loads(sys.argv[1]).items():
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect(("127.0.0.1", port))
        out[name] = "connected"
    except OSError as e:
        out[name] = type(e).__name__
    finally:
        s.close()
print(json.dumps(out))
"""
THIEF = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
end = time.time() + 120
while time.time() < end:
    c, _ = s.accept()
    c.settimeout(2)
    try:
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 6\\r\\n\\r\\nstolen")
    except OSError:
        pass
    c.close()
"""


def make_hub(hub_factory, guarded: bool):
    uid = random.randint(47000, 47999)
    settings = {"user_uid": uid, "use_system_accounts": False}
    if guarded:
        base = random.randrange(20000, 29000, 100)
        settings.update(
            network_isolation="uid-firewall",
            isolated_uids=str(uid),
            server_ports=f"{base}-{base + 99}",
        )
    else:
        settings.update(check_port_owner=False)
    hub = hub_factory(
        {"DS01_TEST_SPAWNER": json.dumps(settings), "DS01_TEST_SLOW_SPAWN_TIMEOUT": "0"}
    )
    hub.uid = uid
    return hub


@pytest.fixture(scope="module")
def hubs(hub_factory, docker_client):
    guarded = make_hub(hub_factory, True)
    open_ = make_hub(hub_factory, False)
    yield {"guarded": guarded, "open": open_}
    remove_firewall(chain_name(guarded.prefix))


def server_port(docker_client, hub, user: str) -> int:
    (c,) = [c for c in ds01_containers(docker_client, hub.prefix, user=user)]
    env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
    return int(env["JUPYTERHUB_SERVICE_URL"].split(":")[2].split("/")[0])


def container_of(docker_client, hub, user: str):
    (c,) = [
        c for c in ds01_containers(docker_client, hub.prefix, user=user) if c.status == "running"
    ]
    return c


def probe(container, ports: dict) -> dict:
    code, out = container.exec_run(["python3", "-c", PROBE, json.dumps(ports)])
    assert code == 0, out
    return json.loads(out.decode().strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["guarded", "open"])
def test_a_container_cannot_reach_other_servers_or_the_proxy_api(hubs, docker_client, mode):
    hub = hubs[mode]
    hub.start_server("alice", "one")
    hub.start_server("bob", "two")
    bob = container_of(docker_client, hub, "bob")
    assert bob.attrs["Config"]["User"].split(":")[0] == str(hub.uid)
    ports = {
        "alice": server_port(docker_client, hub, "alice"),
        "proxy_api": hub.port + 1,
        "hub_api": hub.port + 81,
    }
    seen = probe(bob, ports)
    # the hub's API stays reachable (servers need it) and answers only with credentials
    assert seen["hub_api"] == "connected"
    r = requests.get(f"http://127.0.0.1:{hub.port + 81}/hub/api/users", timeout=10)
    assert r.status_code == 403
    if mode == "guarded":
        assert seen["alice"] == "ConnectionRefusedError", seen
        assert seen["proxy_api"] == "ConnectionRefusedError", seen
        # the proxy (root) still reaches alice's server: her page works
        token = hub.user_token("alice")
        r = hub.session.get(
            f"{hub.url}/user/alice/one/api/status",
            headers={"Authorization": f"token {token}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
    else:  # the control: the same attack connects
        assert seen == {"alice": "connected", "proxy_api": "connected", "hub_api": "connected"}


@pytest.mark.parametrize("mode", ["guarded", "open"])
def test_a_container_cannot_take_the_port_of_a_server_that_starts(hubs, docker_client, mode):
    hub = hubs[mode]
    bob = container_of(docker_client, hub, "bob")  # started by the test above
    write_project(hub, "carol", "slow", {"Dockerfile": SLOW})
    r = hub.request_server("carol", "slow")
    assert r.status_code in (201, 202), r.text

    def carol_port():
        cs = ds01_containers(docker_client, hub.prefix, user="carol")
        return server_port(docker_client, hub, "carol") if cs else None

    port = wait_for(carol_port, 120, "carol's container")
    bob.exec_run(["python3", "-c", THIEF, str(port)], detach=True)
    from .test_images import progress_events

    events = progress_events(hub, "carol", "slow")
    if mode == "guarded":
        assert "Another program took your server's network port" in failure(events)
        log = hub.log_path.read_text(errors="replace")
        assert f"Port 127.0.0.1:{port} of user=carol server=slow is held by" in log
        wait_for(
            lambda: not ds01_containers(docker_client, hub.prefix, user="carol"),
            30,
            "carol's container removed",
        )
    else:  # the control: carol's traffic goes to bob's listener
        ready(events, hub)
        r = hub.session.get(f"{hub.url}/user/carol/slow/", timeout=10)
        assert r.text == "stolen"
        hub.stop_server("carol", "slow")


def test_with_subdomain_host_a_server_is_on_its_users_own_origin(hub_factory):
    """``subdomain_host``: alice's server answers at ``alice.localhost`` (a Host header to
    127.0.0.1), not on the hub's origin; the hub's API still answers on its own."""
    hub = hub_factory({"DS01_TEST_SUBDOMAINS": "1", "DS01_TEST_SLOW_SPAWN_TIMEOUT": "0"})
    model = hub.start_server("alice", "site")
    assert model["url"].startswith(f"http://alice.localhost:{hub.port}/user/alice/site/")
    token = hub.user_token("alice")
    path = f"{hub.url}/user/alice/site/api/status"
    auth = {"Authorization": f"token {token}"}
    own = requests.get(path, headers={**auth, "Host": f"alice.localhost:{hub.port}"}, timeout=10)
    assert own.status_code == 200 and "started" in own.json()
    on_hub = requests.get(
        path, headers={**auth, "Host": f"localhost:{hub.port}"}, timeout=10, allow_redirects=False
    )
    # on the hub's origin (or another user's) the path is the hub's: a redirect, not the server
    assert on_hub.status_code == 302, on_hub.text
    assert on_hub.headers["Location"].endswith("/hub/user/alice/site/api/status")
    other = requests.get(
        path,
        headers={**auth, "Host": f"bob.localhost:{hub.port}"},
        timeout=10,
        allow_redirects=False,
    )
    assert other.status_code == 302 and "started" not in other.text
    assert hub.api("GET", "/users/alice").status_code == 200
    hub.stop_server("alice", "site")
