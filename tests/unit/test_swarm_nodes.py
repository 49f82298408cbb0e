"""The node engine API rule (ds01spawner.swarm.nodes): which URLs DS01 speaks to, and how.

Pure parts only: the TLS/URL rule, the ``swarm_tls`` check, the ``ds01.engine`` label of a node.
Connections to real engines are in tests/integration/test_swarm_ops.py.
"""

from __future__ import annotations

import pytest

from ds01spawner.swarm.nodes import NodeEngineError, NodeEngines, check_engine_url, check_tls
from ds01spawner.swarm.tasks import parse_node

TLS = {"ca": "/etc/ds01/ca.pem", "cert": "/etc/ds01/cert.pem", "key": "/etc/ds01/key.pem"}


@pytest.mark.parametrize(
    "url",
    [
        "unix:///run/docker.sock",
        "tcp://127.0.0.1:2375",
        "tcp://127.8.0.3:2375",
        "tcp://localhost:2375",
        "http://[::1]:2375",
    ],
)
def test_local_engines_need_no_tls(url):
    assert check_engine_url(url, {}) == url


@pytest.mark.parametrize(
    "url", ["tcp://10.0.0.12:2375", "http://gpu2.lab:2375", "tcp://[fe80::1]:2375"]
)
def test_plain_tcp_to_another_host_is_refused_with_the_fix(url):
    with pytest.raises(NodeEngineError, match="refusing plain .*swarm_tls.*--tlsverify.*2376"):
        check_engine_url(url, {})


@pytest.mark.parametrize("url", ["tcp://10.0.0.12:2376", "https://gpu2.lab:2376"])
def test_tcp_with_tls_is_accepted(url):
    assert check_engine_url(url, TLS) == url


def test_https_without_a_client_certificate_is_refused():
    with pytest.raises(NodeEngineError, match="client certificate"):
        check_engine_url("https://gpu2.lab:2376", {"ca": "/ca.pem"})


@pytest.mark.parametrize(
    "url, why",
    [
        ("", "no ds01.engine label"),
        ("ssh://root@gpu2", "unix:// or tcp://"),
        ("gpu2:2376", "unix:// or tcp://"),
        ("unix://", "no socket path"),
        ("tcp://:2376", "no host"),
    ],
)
def test_other_urls_are_refused_with_a_reason(url, why):
    with pytest.raises(NodeEngineError, match=why):
        check_engine_url(url, TLS)


def test_swarm_tls_keys_are_checked():
    assert check_tls(None) == {}
    assert check_tls({"ca": "/ca.pem", "cert": "", "key": None}) == {"ca": "/ca.pem"}
    with pytest.raises(NodeEngineError, match="unknown keys.*'certificate'"):
        check_tls({"certificate": "/c.pem"})
    with pytest.raises(NodeEngineError, match="both 'cert' and 'key'"):
        check_tls({"cert": "/c.pem"})


def _node(labels: dict) -> dict:
    return {
        "ID": "abc123",
        "Spec": {"Labels": labels, "Role": "worker", "Availability": "active"},
        "Description": {"Hostname": "gpu2"},
        "Status": {"State": "ready"},
    }


def test_client_names_the_node_when_its_label_is_missing_or_refused():
    engines = NodeEngines("", tls={})
    no_label = parse_node(_node({"ds01.name": "gpu2"}))
    with pytest.raises(NodeEngineError, match="node gpu2: .*no ds01.engine label"):
        engines.client(no_label)
    plain = parse_node(_node({"ds01.engine": "tcp://10.0.0.12:2375"}))
    assert plain.name == "gpu2"  # the hostname when no ds01.name label
    with pytest.raises(NodeEngineError, match="node gpu2: refusing plain"):
        engines.client(plain)


def test_an_engine_that_does_not_answer_is_a_clear_error_and_is_not_cached(tmp_path):
    engines = NodeEngines("", tls={}, timeout=2)
    node = parse_node(_node({"ds01.engine": f"unix://{tmp_path}/none.sock", "ds01.name": "n9"}))
    for _ in range(2):  # asked again each time: a node that comes back is used again
        with pytest.raises(NodeEngineError, match="engine of node n9 at unix://.* does not answer"):
            engines.client(node)
    assert engines._clients == {}


def test_missing_tls_files_are_a_clear_error():
    engines = NodeEngines(
        "tcp://127.0.0.1:2376", tls={"cert": "/nonexistent/c", "key": "/nonexistent/k"}
    )
    with pytest.raises(NodeEngineError, match="swarm_tls"):
        engines.manager()
