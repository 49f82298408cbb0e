"""Small trust rules: untrusted text in the hub log, tokens over plain http (docs/security.md)."""

import pytest

from ds01spawner.cli.client import HubClient, HubError, plain_http_problem
from ds01spawner.gpus.table import holders, is_server_container, server_containers
from ds01spawner.images.compat import check_labels
from ds01spawner.logsafe import PREFIX, untrusted


def test_container_output_cannot_forge_a_hub_log_line():
    forged = "ok\n[I 2026-11-29 12:00:00.000 JupyterHub app:1] admin in\r[E x]\x1b[31m\u2028z"
    lines = untrusted(forged).split("\n")
    assert len(lines) == 2 and all(line.startswith(PREFIX) for line in lines)
    assert "\r" not in lines[1] and "\x1b" not in lines[1] and "\u2028" not in lines[1]
    assert "\\x0d" in lines[1] and "\\x1b" in lines[1] and "\\u2028" in lines[1]


def test_untrusted_keeps_the_end_of_long_output():
    text = untrusted("a" * 10000 + "THE ERROR", max_chars=100)
    assert text.endswith("THE ERROR") and len(text) < 120


@pytest.mark.parametrize(
    "url, refused",
    [
        ("http://127.0.0.1:8000", False),
        ("http://localhost:8000", False),
        ("http://[::1]:8000", False),
        ("https://ds01.example.org", False),
        ("http://ds01.example.org", True),
        ("http://10.0.0.5:8000", True),
        ("http://127.0.0.1.nip.io:8000", True),
    ],
)
def test_a_token_never_goes_over_plain_http_to_another_machine(url, refused):
    assert (plain_http_problem(url) is not None) == refused
    if refused:
        with pytest.raises(HubError, match="--insecure"):
            HubClient(url, "secret")
        assert HubClient(url, "secret", insecure=True).insecure_warning
    else:
        assert HubClient(url, "secret").insecure_warning is None


# ---- which containers count as a user's server --------------------------------------------------

FORGED = {
    "ds01.managed": "true",
    "ds01.user": "victim",
    "ds01.server": "thesis",
    "ds01.gpus": "GPU-0,GPU-1",
    "ds01.gpu_equivalents": "99",
}


def ps(name, labels):
    return {"Names": [f"/{name}"], "Labels": labels, "State": "running"}


@pytest.mark.parametrize(
    "name, labels, counted",
    [
        ("ds01-victim.thesis", FORGED, True),  # what the hub creates for victim/thesis
        ("ds01-victim._default", {**FORGED, "ds01.server": ""}, True),
        ("ds01_imagecheck_1a2b3c4d", FORGED, False),  # the image check, forged labels
        ("ds01-imagecheck-1a2b3c4d", FORGED, False),  # the old naming of the check
        ("ds01-mallory.thesis", FORGED, False),  # mallory's server claiming to be victim's
        ("ds01-victim.thesis", {**FORGED, "ds01.managed": "false"}, False),
        ("ds01-victim.thesis", {k: v for k, v in FORGED.items() if k != "ds01.server"}, False),
        ("other-victim.thesis", FORGED, False),  # another hub's prefix
    ],
)
def test_only_containers_named_as_the_hub_names_a_server_count(name, labels, counted):
    assert is_server_container(ps(name, labels), "ds01") is counted
    assert bool(holders(server_containers([ps(name, labels)], "ds01"))) is counted


def test_the_image_check_overrides_every_ds01_label_of_the_image():
    labels = check_labels({**FORGED, "maintainer": "me"})
    assert labels["ds01.managed"] == "false" and labels["ds01.image-check"] == "true"
    assert all(labels[k] == "" for k in FORGED if k != "ds01.managed")
    assert "maintainer" not in labels  # not ours to touch


def test_cli_keeps_an_absolute_server_url_and_joins_a_path():
    client = HubClient("http://127.0.0.1:8000", "t")
    assert client.absolute("/user/ann/x/") == "http://127.0.0.1:8000/user/ann/x/"
    own_origin = "http://ann.localhost:8000/user/ann/x/"  # the hub's url under subdomain_host
    assert client.absolute(own_origin) == own_origin
