"""What a new user sees where issue 15 found them stuck, in a real browser on one hub (GPU queue
on, one whole GPU and one GPU split in MIG slices, a small limits file):

- a launch over the user's GPU limit from a form opened earlier is refused at once with the
  limit's sentence, never "Waiting for a GPU" (item 1);
- "Start a server" leads to the spawn form while a project runs (item 4); at the limit of servers
  the form says so once and offers no Start (item 7);
- GPU amounts read as people write them, and a preselected "No GPU" says why (item 11);
- a broken Dockerfile: the failure reads as failed, on the form and on the progress page, with
  the output as a left-aligned monospace block, and the standard image opens the project (items
  5 and 6).
"""

from __future__ import annotations

import json
import re

import pytest

from .test_spawn_form_browser import log_in

A100 = {"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960}
MIG_A100 = {**A100, "mig_profiles": ["3g.20gb", "2g.10gb", "2g.10gb"]}
LIMITS = """
defaults:
  max_gpu_equivalents: 1
  max_gpus_per_server: 1
  allow_full_gpu: true
  max_servers: 2
  cpus: 2
  memory: 4G
  shm_size: 1G
  pids_limit: 1024
  max_runtime: 24
  idle_timeout: 2
users:
  alice:
    max_servers: 1
  dana:
    max_gpu_equivalents: 0.5
"""


@pytest.fixture(scope="module")
def hub(hub_factory, tmp_path_factory):
    limits = tmp_path_factory.mktemp("limits") / "limits.yaml"
    limits.write_text(LIMITS)
    return hub_factory(
        {
            "DS01_TEST_LIMITS": str(limits),
            "DS01_TEST_GPUS": json.dumps([A100, MIG_A100]),
            "DS01_TEST_GPU_QUEUE": "120",
            "DS01_TEST_DEFAULT_GPUS": "1",
            # "a fast failure lands on the form" must not depend on the machine's load: a
            # failing build under load (another worker loading images) took over the hub's
            # default 10 s and landed on the progress page instead
            "DS01_TEST_SLOW_SPAWN_TIMEOUT": "30",
        }
    )


def test_refusals_are_at_once_said_once_and_numbers_are_for_people(page, hub, screenshot):
    # item 1: bob opens the form with nothing running, then takes the whole GPU elsewhere
    log_in(page, hub, "bob")
    page.goto(f"{hub.url}/hub/spawn/bob")
    page.get_by_label("Name", exact=True).fill("more")
    page.get_by_label("GPU").select_option("full:1")
    hub.start_server("bob", "big", {"gpus": 1, "gpu_type": "full"})
    page.get_by_role("button", name="Start").click()
    error = page.locator(".spawn-error-msg")
    error.wait_for()
    assert "You are using 1.0 of your 1.0 GPUs (projects: big)" in error.inner_text()
    assert "Waiting for a GPU" not in page.content()
    assert not (hub.workspaces / "bob" / "more").exists()

    # item 11: dana holds a 3g.20gb slice (3/7 of a GPU) of her 0.5
    hub.start_server("dana", "slice", {"gpus": 1, "gpu_type": "3g.20gb"})
    page.context.clear_cookies()
    log_in(page, hub, "dana")
    page.goto(f"{hub.url}/hub/spawn/dana")
    notice = page.locator("#ds01-gpu-notice")
    assert notice.is_visible()
    assert notice.inner_text() == "No GPU is selected: over your limit: 0.07 of 0.5 GPUs left."
    assert page.get_by_label("GPU").input_value() == "0"
    assert "0.0714" not in page.content() and "0.4286" not in page.content()

    # items 4 and 7: alice runs one project, her limit is one server
    hub.start_server("alice", "running", {"gpus": 0})
    page.context.clear_cookies()
    log_in(page, hub, "alice")
    page.get_by_role("button", name="Start a server").click()
    page.wait_for_url(re.compile(r".*/hub/spawn/alice$"))
    assert page.locator("#ds01-form").is_visible()  # the form, not "Server not running"
    problems = page.locator(".ds01-problem")
    assert problems.count() == 1
    assert problems.inner_text() == (
        "You are running 1 of your 1 servers (projects: running). "
        "Retire one or ask an admin for more."
    )
    assert page.get_by_role("button", name="Start").is_disabled()
    screenshot(page, "spawn-form-at-limit")
    for user, server in (("alice", "running"), ("bob", "big"), ("dana", "slice")):
        hub.stop_server(user, server)


def test_a_broken_dockerfile_fails_readably_and_the_standard_image_opens_it(page, hub, screenshot):
    project = hub.workspaces / "erin" / "broken"
    project.mkdir(parents=True)
    (project / "Dockerfile").write_text(
        "FROM ds01/base:latest\nRUN echo first-line && echo second-line && exit 3\n"
    )
    log_in(page, hub, "erin")
    page.goto(f"{hub.url}/hub/spawn/erin")
    page.locator("#ds01-project-broken").check()
    page.get_by_label("GPU").select_option("0")
    page.get_by_role("button", name="Start").click()

    # a fast failure lands on the form: the sentence, then the output as a block
    error = page.locator(".spawn-error-msg")
    error.wait_for(timeout=120_000)
    assert "Your image could not be built" in error.inner_text()
    block = error.locator("pre")
    assert "first-line\nsecond-line" in block.inner_text()
    style = block.evaluate(
        "e => [getComputedStyle(e).fontFamily, getComputedStyle(e.parentNode).textAlign]"
    )
    assert "monospace" in style[0].lower() and style[1] in ("left", "start")
    screenshot(page, "spawn-form-build-failed")

    # the way out: the standard image, labelled as such
    page.locator("#ds01-project-broken").check()
    page.get_by_label("GPU").select_option("0")
    standard = page.locator("#ds01-image option[value=standard]")
    assert "Standard image ds01/base:latest, ignoring the project's Dockerfile" in (
        standard.inner_text()
    )
    page.get_by_label("Environment").select_option("standard")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(r".*/user/erin/broken/.*"), timeout=120_000)
    assert hub.server_model("erin", "broken")["ready"]
    hub.stop_server("erin", "broken")

    # a failure after the hub's slow_spawn_timeout (30 s here) answers on the progress page:
    # it reads as failed
    (project / "Dockerfile").write_text(
        "FROM ds01/base:latest\nRUN echo slow-line && sleep 33 && echo last-line && exit 4\n"
    )
    page.goto(f"{hub.url}/hub/spawn/erin/broken")
    page.get_by_label("GPU").select_option("0")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(r".*/hub/spawn-pending/erin/broken.*"), timeout=60_000)
    heading = page.locator("#ds01-failed-heading")
    heading.wait_for(state="visible", timeout=120_000)
    assert heading.inner_text() == "Your server for project broken could not start"
    for hidden in ("#ds01-progress", "#stop-server-btn", "#ds01-starting"):
        assert not page.locator(hidden).is_visible(), hidden
    message = page.locator("#ds01-message-box")
    assert "alert-danger" in message.get_attribute("class")
    output = message.locator("pre")
    assert "slow-line\nlast-line" in output.inner_text()
    align = message.evaluate(
        "e => getComputedStyle(e.querySelector('#progress-message')).textAlign"
    )
    assert align in ("left", "start")
    assert page.get_by_role("link", name="Back to the launch form").is_visible()
    screenshot(page, "progress-build-failed")
