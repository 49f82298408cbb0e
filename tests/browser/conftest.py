"""Browser tests: headless Debian chromium driven by Playwright, against a real hub on 127.0.0.1.

Screenshots go to the test's temporary folder; with ``DS01_UPDATE_SCREENSHOTS=1`` they are also
copied to docs/screenshots/ (that is how the pictures in the docs are made).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ..integration.conftest import docker_client, hub_factory  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module. Playwright's sync API runs an event loop in this thread
    while it is open, so it must close before tests that use asyncio.run (module scope)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing. Run scripts/setup.sh --browser (or scripts/test.sh).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    p = context.new_page()
    yield p
    context.close()


@pytest.fixture
def screenshot(tmp_path):
    """``screenshot(page, "spawn-form")``: a PNG of the page, kept for the docs on request."""

    def take(page, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if os.environ.get("DS01_UPDATE_SCREENSHOTS") == "1":
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, DOCS_SCREENSHOTS / path.name)
        return path

    return take
