"""Can an image run ``jupyterhub-singleuser`` of a version that works with this hub?

Checked once per image id, before a server's container is created: a short container of the
image runs ``jupyterhub-singleuser --version`` the way a server runs its command (``/bin/sh``,
the image's own entrypoint, the user's uid:gid), without network and without capabilities.
Compatible means the same major version as the hub's jupyterhub. Results are cached by image id
(an id names its content, so a result never goes stale); concurrent checks of one id share one.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import requests

CHECK_COMMAND = ["/bin/sh", "-c", 'exec "$@"', "ds01-check", "jupyterhub-singleuser", "--version"]
#: host config of the check container: a fork bomb or a busy loop in an image's entrypoint
#: cannot take the host while the hub waits for the check
CHECK_LIMITS = {"pids_limit": 128, "nano_cpus": 1_000_000_000, "mem_limit": 1 << 30}
_VERSION_RE = re.compile(r"\s*v?(\d+)\.(\d+)(?:\.\d+)?\S*\s*")


@dataclass(frozen=True)
class CompatResult:
    ok: bool
    version: str | None  # what the image reports
    output: str  # the last lines of the check's output (for the message)
    final: bool = True  # False: could not tell (the check timed out); never cached


def parse_version(output: str) -> str | None:
    """The last line of ``output`` that is a version number."""
    for line in reversed(output.strip().splitlines()):
        if _VERSION_RE.fullmatch(line):
            return line.strip().lstrip("v")
    return None


def compatible(image_version: str | None, hub_version: str) -> bool:
    if not image_version:
        return False
    return image_version.split(".")[0] == hub_version.split(".")[0]


def judge(exit_code: int | None, output: str, hub_version: str) -> CompatResult:
    version = parse_version(output) if exit_code == 0 else None
    tail = "\n".join(output.strip().splitlines()[-10:])
    return CompatResult(compatible(version, hub_version), version, tail)


def problem_sentence(result: CompatResult, hub_version: str, base_image: str) -> str:
    """What the user is told when their image cannot run a server, with the fix."""
    fix = (
        f"Start your Dockerfile FROM the DS01 base image ({base_image}), which has it, or "
        f"install it in your image: RUN pip install jupyterhub=={hub_version}"
    )
    if result.version:
        return (
            f"Your image has jupyterhub-singleuser {result.version}, but this hub runs "
            f"jupyterhub {hub_version}, so your server could not start. {fix}."
        )
    shown = f" It said:\n{result.output}" if result.output else ""
    return (
        f"Your image cannot run jupyterhub-singleuser, so your server could not start. {fix}."
        f"{shown}"
    )


def check_labels(image_labels: dict) -> dict:
    """The check container's labels: Docker copies the image's labels into the container, and a
    user's image may say ``ds01.managed=true ds01.user=<victim> ds01.gpus=...``; every ``ds01.*``
    label of the image is overridden (emptied), ``ds01.managed`` is ``false``."""
    labels = {k: "" for k in image_labels if k.startswith("ds01.")}
    labels.update({"ds01.managed": "false", "ds01.image-check": "true"})
    return labels


def run_check(
    api, image: str, user: str, name_prefix: str, timeout: float = 60, limits: dict | None = None
) -> CompatResult:
    """Run the check container of ``image`` (blocking: call it in a thread)."""
    import docker
    from jupyterhub import __version__ as hub_version

    # Outside the servers' naming (``<prefix>-<user>.<server>``), so never counted as a server
    # (gpus.table.is_server_container), whatever labels its image carries.
    name = f"{name_prefix}_imagecheck_{secrets.token_hex(4)}"
    host_config = api.create_host_config(
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        **(limits or {}),
    )
    container = api.create_container(
        image,
        command=CHECK_COMMAND,
        user=user,
        name=name,
        # no GPU for the check, even under an engine whose default runtime is NVIDIA's and an
        # image whose ENV names devices (a user's image is not trusted)
        environment={"HOME": "/tmp", "NVIDIA_VISIBLE_DEVICES": "void"},
        host_config=host_config,
        network_disabled=True,
        labels=check_labels(api.inspect_image(image)["Config"].get("Labels") or {}),
    )
    try:
        try:
            api.start(container)
        except docker.errors.APIError as e:  # e.g. no /bin/sh in the image
            return judge(None, str(e.explanation or e), hub_version)
        try:
            exit_code = api.wait(container, timeout=timeout).get("StatusCode")
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            return CompatResult(False, None, f"(no answer within {timeout:.0f} s)", final=False)
        output = api.logs(container, stdout=True, stderr=True, tail=40)
        return judge(exit_code, output.decode("utf-8", "replace"), hub_version)
    finally:
        try:
            api.remove_container(container, force=True)
        except docker.errors.APIError:
            pass


class CompatChecker:
    """Cached, shared checks: one per image id however many launches need it."""

    def __init__(self) -> None:
        self._results: dict[str, CompatResult] = {}
        self._running: dict[str, asyncio.Future[CompatResult]] = {}
        self.checks_run = 0

    def cached(self, image_id: str) -> CompatResult | None:
        return self._results.get(image_id)

    async def check(
        self, image_id: str, run: Callable[[], Awaitable[CompatResult]]
    ) -> CompatResult:
        """The result for ``image_id``: cached, or the check that runs, or a new one. A waiter
        that is cancelled never cancels the check others wait for."""
        if image_id in self._results:
            return self._results[image_id]
        task = self._running.get(image_id)
        if task is None:
            self.checks_run += 1
            task = asyncio.ensure_future(run())
            self._running[image_id] = task
            task.add_done_callback(lambda t: self._done(image_id, t))
        return await asyncio.shield(task)

    def _done(self, image_id: str, task: asyncio.Future) -> None:
        self._running.pop(image_id, None)
        if not task.cancelled() and task.exception() is None and task.result().final:
            self._results[image_id] = task.result()
