"""A launch as a value: what is decided before the engine is asked for a container.

``LaunchPlan`` is frozen and built by ``launch_plan`` from explicit inputs (the I/O that found
them, such as the identity, the limits or the workspace, is done by the caller). The spawner's
steps take the plan: allocation and container creation read it, never launch state on ``self``.
``LaunchPhases`` is the one mutable record of a launch: the phase timings the steps append to
(audited with the "start" event).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

from ..gpus.allocator import GpuRequest
from ..gpus.broker import GpuBroker
from ..gpus.model import Device
from ..identity import Identity
from ..limits.model import Limits
from ..web.form import STANDARD_IMAGE, LaunchOptions

#: how a launch's image is obtained
IMAGE_BASE = "base"  # the configured image (no Dockerfile, or project images switched off)
IMAGE_DOCKERFILE = "dockerfile"  # built (or reused) from the project's Dockerfile
IMAGE_OFFERED = "offered"  # an image the admin offers, chosen on the form
IMAGE_STANDARD = "standard"  # the configured image, the project's Dockerfile ignored
IMAGE_PROJECT = "project"  # not decided yet: the Dockerfile when there is one, else base


@dataclass(frozen=True)
class LaunchPlan:
    """Everything decided about one launch before the engine is called."""

    user: str
    server: str
    project: str
    options: LaunchOptions
    identity: Identity
    home: str
    gpu_broker: GpuBroker | None  # None: no GPU inventory and no GPU asked for
    gpu_request: GpuRequest  # parsed once from options.gpu_options, shaped by the limits
    gpu_devices: tuple[Device, ...]  # the devices the request was checked against
    limits: Limits
    workspace_dir: str
    workspace_identity: tuple[int, int]  # (st_dev, st_ino) of the prepared folder
    image: str  # the image reference ("" until an IMAGE_PROJECT image is obtained)
    image_source: str  # IMAGE_BASE, IMAGE_DOCKERFILE, IMAGE_OFFERED, IMAGE_STANDARD, IMAGE_PROJECT

    def with_image(self, image: str, source: str) -> LaunchPlan:
        """The plan once its image is obtained."""
        return dataclasses.replace(self, image=image, image_source=source)


def image_choice(options: LaunchOptions, base_image: str) -> tuple[str, str]:
    """(image reference, how it is obtained) as far as the checked options decide it."""
    if options.image == STANDARD_IMAGE:
        return base_image, IMAGE_STANDARD
    if options.image:
        return options.image, IMAGE_OFFERED
    return "", IMAGE_PROJECT


def launch_plan(
    *,
    user: str,
    server: str,
    options: LaunchOptions,
    identity: Identity,
    home: str,
    gpu_broker: GpuBroker | None,
    gpu_request: GpuRequest,
    gpu_devices: list[Device] | tuple[Device, ...],
    limits: Limits,
    workspace_dir: str,
    workspace_identity: tuple[int, int],
    base_image: str,
) -> LaunchPlan:
    """The plan of one launch from what the caller found (pure)."""
    image, source = image_choice(options, base_image)
    return LaunchPlan(
        user=user,
        server=server,
        project=options.project,
        options=options,
        identity=identity,
        home=home,
        gpu_broker=gpu_broker,
        gpu_request=gpu_request,
        gpu_devices=tuple(gpu_devices),
        limits=limits,
        workspace_dir=workspace_dir,
        workspace_identity=tuple(workspace_identity),
        image=image,
        image_source=source,
    )


@dataclass
class LaunchPhases:
    """The phase timings of one launch (seconds), appended to by its steps."""

    timings: dict[str, float] = field(default_factory=dict)
    allocated_at: float | None = None  # monotonic time the devices were decided

    def record(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 3)

    def allocated(self, began: float) -> None:
        """The allocate phase ends now (it began at ``began``)."""
        self.allocated_at = time.monotonic()
        self.timings["allocate"] = round(self.allocated_at - began, 3)

    def started(self) -> None:
        """The server listens: the start phase (from the allocation) ends."""
        if self.allocated_at is not None:
            self.record("start", self.allocated_at)
