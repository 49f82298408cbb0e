"""The admin view in a real browser: after two users launch GPU servers and a third waits for
one, the admin sees who holds which device and who waits (times for people, GPUs by index, the
hub's navbar), retires one (confirmation page, XSRF-protected form) and sees the device free; a
non-admin gets 403."""

from __future__ import annotations

import json
import re

import pytest

from ..integration.hub import ds01_containers, wait_for
from .test_spawn_form_browser import log_in


@pytest.fixture(scope="module")
def hub(hub_factory):
    a100 = {"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960}
    return hub_factory(
        {
            "DS01_TEST_DEFAULT_GPUS": "1",
            "DS01_TEST_GPUS": json.dumps([a100] * 2),
            "DS01_TEST_GPU_QUEUE": "300",
        }
    )


def test_admin_sees_holders_retires_one_and_sees_the_device_free(
    page, hub, docker_client, screenshot
):
    hub.start_server("alice", "thesis", {"gpus": 1})
    hub.start_server("bob", "vision", {"gpus": 1})
    held = {}
    for c in ds01_containers(docker_client, hub.prefix):
        labels = c.labels
        held[labels["ds01.gpus"]] = (labels["ds01.user"], labels["ds01.project"])
    assert sorted(held.values()) == [("alice", "thesis"), ("bob", "vision")]

    r = hub.request_server("erin", "waits", {"gpus": 1})  # both GPUs held: erin waits
    assert r.status_code == 202, r.text
    wait_for(lambda: hub.server_model("erin", "waits"), 30, "erin's launch pending")

    log_in(page, hub, "admin")
    hub_logo = page.locator("#jupyterhub-logo img").bounding_box()["height"]
    page.get_by_role("link", name=re.compile("GPUs and usage of everyone")).click()
    page.wait_for_url(re.compile(r".*/services/ds01-admin/$"))
    gpu_map = page.locator("#ds01-gpu-map")
    for uuid, (user, project) in held.items():
        row = gpu_map.locator(f'tr[data-uuid="{uuid}"]')
        assert row.get_attribute("data-state") == "allocated"
        assert row.locator(".ds01-holder").inner_text() == user
        assert project in row.inner_text()
    summary = page.locator("#ds01-gpu-summary").inner_text()
    assert "2 allocated, 0 free" in summary
    assert re.search(r"Checked \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\.", summary), summary
    # item 8: the hub's logo size and navbar, times and GPUs for people, waiting is not running
    assert abs(page.locator("#jupyterhub-logo img").bounding_box()["height"] - hub_logo) <= 1
    assert page.get_by_role("link", name="Token").is_visible()
    queue = page.locator("#ds01-queue").inner_text()
    assert re.fullmatch(
        r"erin/waits: 1 GPU \(any\), waiting since \d\d:\d\d:\d\d UTC \(\d+ min ago\)",
        queue.strip(),
    ), queue
    erin = page.locator('#ds01-users tr[data-user="erin"]')
    assert erin.locator(".ds01-server-state").inner_text() == "starting"
    assert "not started" in erin.inner_text() and " h " not in erin.inner_text()
    users = page.locator("#ds01-users").inner_text()
    assert re.search(r"GPU \d", users) and not any(uuid in users for uuid in held)
    screenshot(page, "admin-view")
    r = hub.api("DELETE", "/users/erin/servers/waits")  # erin gives up waiting
    assert r.status_code in (202, 204), r.text
    wait_for(lambda: hub.server_model("erin", "waits") is None, 30, "erin's launch stopped")

    alice_uuid = next(u for u, (user, _) in held.items() if user == "alice")
    page.get_by_role("button", name="Retire alice/thesis").click()
    page.wait_for_url(re.compile(r".*/confirm/retire\?.*"))
    assert "alice/thesis" in page.locator("#ds01-confirm").inner_text()
    screenshot(page, "admin-confirm-retire")
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url(re.compile(r".*/services/ds01-admin/\?done=.*"))
    assert "alice/thesis" in page.locator("#ds01-done").inner_text()

    wait_for(
        lambda: not ds01_containers(docker_client, hub.prefix, user="alice"), 60, "alice retired"
    )

    def device_free():
        page.reload()
        row = page.locator(f'#ds01-gpu-map tr[data-uuid="{alice_uuid}"]')
        return row.get_attribute("data-state") == "free"

    wait_for(device_free, 30, "the device shown free")
    assert (
        page.locator(f'#ds01-gpu-map tr[data-uuid="{alice_uuid}"] .ds01-holder').inner_text() == ""
    )
    assert page.locator('#ds01-users tr[data-user="alice"]').count() == 0
    assert page.locator('#ds01-users tr[data-user="bob"]').count() == 1


def test_a_non_admin_gets_403_and_sees_their_own_usage(page, hub, screenshot):
    log_in(page, hub, "bob")
    assert page.locator("#ds01-admin-link").count() == 0
    response = page.goto(f"{hub.url}/services/ds01-admin/")
    assert response.status == 403
    page.goto(f"{hub.url}/hub/home")
    page.locator("#ds01-usage-link").click()
    page.wait_for_url(re.compile(r".*/services/ds01-limits/$"))
    assert "Your usage and limits" in page.inner_text("h1")
    assert "vision" in page.locator("#ds01-usage-servers").inner_text()
    screenshot(page, "usage")
