"""The test hub: ``harness.hub`` (shared with the benchmarks), re-exported under the name the
integration tests import."""

from harness.hub import (  # noqa: F401
    CONFIG,
    REPO,
    Hub,
    HubExited,
    ds01_containers,
    free_port_block,
    wait_for,
)
