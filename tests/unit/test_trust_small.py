"""Small trust rules: untrusted text in the hub log, tokens over plain http (docs/security.md)."""

import pytest

from ds01spawner.cli.client import HubClient, HubError, plain_http_problem
from ds01spawner.logsafe import PREFIX, untrusted


def test_container_output_cannot_forge_a_hub_log_line():
    forged = "ok\n[I 2026-11-29 12:00:00.000 JupyterHub app:1] admin logged in\r[E x]\x1b[31m\u2028z"
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
