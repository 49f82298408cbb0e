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
import os
import random
import secrets

import pytest
import requests

from ds01spawner.spawner.netguard import chain_name, remove_firewall

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
        free_ports = range(base + 99, base + 49, -1)  # inside its firewalled range
    else:
        settings.update(check_port_owner=False)
        free_ports = range(31999, 31949, -1)
    hub = hub_factory(
        {"DS01_TEST_SPAWNER": json.dumps(settings), "DS01_TEST_SLOW_SPAWN_TIMEOUT": "0"}
    )
    hub.uid = uid
    hub.free_ports = free_ports  # where the IPv6 and UDP test binds its listeners
    return hub


@pytest.fixture(scope="module")
def hubs(hub_factory, docker_client):
    guarded = make_hub(hub_factory, True)
    open_ = make_hub(hub_factory, False)
    yield {"guarded": guarded, "open": open_}
    remove_firewall(chain_name(guarded.prefix))
    remove_firewall(chain_name(guarded.prefix), tool="ip6tables")


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


PROBE_V6_UDP = """
import socket, sys, json
port = int(sys.argv[1])
out = {}
s = socket.socket(socket.AF_INET6)
s.settimeout(3)
try:
    s.connect(("::1", port))
    out["tcp6"] = "connected"
except OSError as e:
    out["tcp6"] = type(e).__name__
finally:
    s.close()
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    u = socket.socket(family, socket.SOCK_DGRAM)
    try:
        u.sendto(b"from-bob", (host, port))
    except OSError:
        pass  # a refused datagram may fail here or silently: the receiver tells
    finally:
        u.close()
print(json.dumps(out))
"""


def loopback_listeners(ports):
    """A TCP listener on [::1] and UDP sockets on 127.0.0.1 and [::1], on one free port."""
    import socket

    for port in ports:
        made = []
        try:
            for family, kind, host in (
                (socket.AF_INET6, socket.SOCK_STREAM, "::1"),
                (socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1"),
                (socket.AF_INET6, socket.SOCK_DGRAM, "::1"),
            ):
                sock = socket.socket(family, kind)
                made.append(sock)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((host, port))
            made[0].listen(4)
            return port, made
        except OSError:
            for sock in made:
                sock.close()
    raise AssertionError(f"no free port among {ports}")


@pytest.mark.parametrize("mode", ["guarded", "open"])
def test_ipv6_loopback_and_udp_are_refused_too(hubs, docker_client, mode):
    """A server or any program listening on ``::1``, or on UDP, inside the guarded range is
    out of a student's reach as well (ip6tables and the UDP rules); the open hub is the control."""
    hub = hubs[mode]
    if not [c for c in ds01_containers(docker_client, hub.prefix, user="bob")]:
        hub.start_server("bob", "two")  # installs the guarded hub's firewall
    bob = container_of(docker_client, hub, "bob")
    port, (tcp6, udp4, udp6) = loopback_listeners(hub.free_ports)
    try:
        code, out = bob.exec_run(["python3", "-c", PROBE_V6_UDP, str(port)])
        assert code == 0, out
        seen = json.loads(out.decode().strip().splitlines()[-1])
        received = set()
        for name, sock in (("udp4", udp4), ("udp6", udp6)):
            sock.setblocking(False)  # loopback delivers within sendto: it is there or not
            try:
                if sock.recv(64) == b"from-bob":
                    received.add(name)
            except BlockingIOError:
                pass
    finally:
        for sock in (tcp6, udp4, udp6):
            sock.close()
    if mode == "guarded":
        assert seen["tcp6"] == "ConnectionRefusedError", seen
        assert received == set()
    else:
        assert seen["tcp6"] == "connected", seen
        assert received == {"udp4", "udp6"}


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


def test_with_subdomain_host_a_server_is_on_its_users_own_origin(hub_factory, tmp_path):
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
    opened_through_ds01(hub, model["url"], tmp_path)
    hub.stop_server("alice", "site")


# The CLI's process resolves ``*.localhost`` to 127.0.0.1, as Chromium, systemd-resolved and
# nss-myhostname do (RFC 6761); this machine's glibc resolves only ``localhost`` itself.
LOCALHOST_NAMES = """
import socket
_real = socket.getaddrinfo
def _loopback(host, *args, **kw):
    if isinstance(host, str) and host.endswith(".localhost"):
        host = "127.0.0.1"
    return _real(host, *args, **kw)
socket.getaddrinfo = _loopback
"""


def opened_through_ds01(hub, server_url: str, tmp_path) -> None:
    """DS01's home page, the ``ds01`` CLI and a browser reach the server on its own origin."""
    import subprocess
    import sys

    from .hub import REPO

    # the home page: Open is the server's own origin, the usage link the service's
    home = hub.login("alice").get(f"{hub.url}/hub/home", timeout=30).text
    assert f'href="{server_url}" id="open-site"' in home, home
    # JupyterHub's subdomain_hook gives the service its own origin; the link is the service's href
    service_host = f"ds01-limits--service.localhost:{hub.port}"
    assert f'id="ds01-usage-link" href="http://{service_host}/services/ds01-limits/"' in home, home
    r = requests.get(
        f"{hub.url}/services/ds01-limits/",
        headers={"Host": service_host},
        timeout=10,
        allow_redirects=False,
    )
    # the service itself answers there: it sends the browser to the hub's OAuth
    assert r.status_code == 302 and "/hub/api/oauth2/authorize" in r.headers["Location"], r

    (tmp_path / "sitecustomize.py").write_text(LOCALHOST_NAMES)
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path),
        "DS01_HUB_URL": hub.url,
        "DS01_TOKEN": hub.user_token("alice"),
        "COLUMNS": "200",
        "PYTHONPATH": f"{tmp_path}:{REPO}",
    }

    def ds01(*args):
        return subprocess.run(
            [sys.executable, "-m", "ds01spawner.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    r = ds01("container", "list", "--json")
    assert r.returncode == 0, r.stderr
    (item,) = json.loads(r.stdout)
    assert item["url"] == server_url, item  # not the hub's address joined with a full URL
    token = hub.user_token("alice")
    host = f"alice.localhost:{hub.port}"
    path = server_url.split(host, 1)[1]
    r = requests.get(
        f"{hub.url}{path}api/status",
        headers={"Host": host, "Authorization": f"token {token}"},
        timeout=10,
    )
    assert r.status_code == 200 and "started" in r.json()
    # the CLI's service calls go to the service's own origin, which the hub tells it
    r = ds01("project", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert "site" in [p["name"] for p in json.loads(r.stdout)]
    r = ds01("container", "attach", "site", "-c", "echo hi")
    assert r.returncode == 0, r.stderr
    assert "hi" in r.stdout.split(), r.stdout

    open_in_chromium(hub, server_url)


def open_in_chromium(hub, server_url: str) -> None:
    """A browser follows the Open link from the home page to JupyterLab on alice.localhost."""
    import re

    from playwright.sync_api import sync_playwright

    from ..browser.conftest import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"http://localhost:{hub.port}/hub/login")
            page.get_by_label("Username").fill("alice")
            page.get_by_label("Password").fill("ds01-demo")
            page.keyboard.press("Enter")
            page.wait_for_url(re.compile(r".*/hub/home$"))
            page.locator("#open-site").click()
            page.wait_for_url(re.compile(rf"^{re.escape(server_url)}lab"), timeout=60_000)
            page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
        finally:
            browser.close()
