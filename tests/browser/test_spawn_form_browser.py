"""A user's first visit, in a real browser: log in, create a project on the spawn form, follow
the progress page into JupyterLab, see /workspace, retire the server from the home page."""

from __future__ import annotations

import re

import pytest

from ..integration.hub import ds01_containers

LAB_TIMEOUT = 120_000  # ms: the spawn, then JupyterLab's first load in a headless browser


@pytest.fixture(scope="module")
def hub(hub_factory):
    return hub_factory({"DS01_TEST_DEFAULT_GPUS": "1"})


def log_in(page, hub, user: str) -> None:
    page.goto(f"{hub.url}/hub/login")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill("ds01-demo")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/hub/home$"))


def test_create_launch_see_workspace_and_retire(page, hub, docker_client, screenshot):
    log_in(page, hub, "alice")
    page.get_by_role("button", name="Start a server").click()
    page.wait_for_url(re.compile(r".*/hub/spawn/alice$"))

    page.get_by_label("Name", exact=True).fill("thesis")
    assert page.locator("#ds01-project-new").is_checked()  # typing a name chose "New project"
    page.get_by_label(re.compile(r"^python-ml:")).check()
    page.get_by_label("GPU").select_option("full:1")
    assert "4 of 4 GPUs free" in page.locator("#ds01-gpu-free").inner_text()
    screenshot(page, "spawn-form")
    page.get_by_role("button", name="Start").click()

    # the progress page, then JupyterLab of the project's named server
    page.wait_for_url(re.compile(r".*/user/alice/thesis/lab.*"), timeout=LAB_TIMEOUT)
    listing = page.locator(".jp-DirListing-content")
    for name in ("notebooks", "README.md", "Dockerfile"):
        listing.get_by_text(name, exact=True).first.wait_for(timeout=LAB_TIMEOUT)
    # a managed lab does not ask about Jupyter news (issue 15 item 10): the setting the lab
    # itself reads says "Never", so the question is never asked
    news = page.evaluate(
        """async () => {
            const xsrf = document.cookie.match(/_xsrf=([^;]+)/);
            const r = await fetch('/user/alice/thesis/lab/api/settings/'
                + '@jupyterlab/apputils-extension:notification',
                {headers: xsrf ? {'X-XSRFToken': xsrf[1]} : {}});
            return (await r.json()).settings;
        }"""
    )
    assert news == {"fetchNews": "false", "checkForUpdates": False}, news
    assert page.get_by_text("official Jupyter news").count() == 0
    screenshot(page, "jupyterlab-workspace")

    page.goto(f"{hub.url}/hub/home")
    row = page.locator('tr[data-project="thesis"]')
    assert "running" in row.locator(".ds01-state").inner_text()
    assert "simulated GPU" in row.inner_text()
    assert row.locator("time").count() == 1
    screenshot(page, "home")

    (container,) = ds01_containers(docker_client, hub.prefix, user="alice", project="thesis")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=re.compile("Retire")).click()
    page.locator("#launch-thesis").wait_for(timeout=60_000)
    assert "not running" in page.locator('tr[data-project="thesis"] .ds01-state').inner_text()
    assert ds01_containers(docker_client, hub.prefix, user="alice") == []
    assert (hub.workspaces / "alice" / "thesis" / "README.md").is_file()
    assert hub.server_model("alice", "thesis") is None

    # the project is now offered on the form, with its Dockerfile
    page.get_by_role("button", name="Start a server").click()
    label = page.locator('label[for="ds01-project-thesis"]')
    assert "its Dockerfile (image built and up to date)" in label.inner_text()
    assert "not running" in label.inner_text()


def test_keyboard_only_launch_and_every_field_has_a_label(page, hub):
    log_in(page, hub, "bob")
    page.goto(f"{hub.url}/hub/spawn/bob")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('#ds01-form input, #ds01-form select')]
            .filter(e => e.type !== 'hidden')
            .filter(e => !(e.id && document.querySelector(`label[for="${e.id}"]`))
                         && !e.getAttribute('aria-label'))
            .map(e => e.outerHTML)"""
    )
    assert unlabelled == []
    for _ in range(60):  # Tab through the page to the name field, as a keyboard user does
        if page.evaluate("document.activeElement && document.activeElement.id") == "ds01-new-name":
            break
        page.keyboard.press("Tab")
    else:
        pytest.fail("Tab never reached the project name field")
    page.keyboard.type("kbd")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/user/bob/kbd/lab.*"), timeout=LAB_TIMEOUT)
    assert hub.server_model("bob", "kbd")["ready"]
    hub.stop_server("bob", "kbd")
