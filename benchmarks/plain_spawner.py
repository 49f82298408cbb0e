"""Plain DockerSpawner with the least change that makes it run on the host network.

This is the "plain DockerSpawner" reference of ``spawn_latency.py``. DockerSpawner 14 with
``network_name = "host"`` adds ``port_bindings`` and Docker refuses them on the host network, and
its ``get_ip_and_port`` asks Docker for a published port that host networking does not have. So
this subclass only

- picks a free loopback port per server and tells jupyterhub-singleuser to listen there,
- turns ``use_internal_ip`` on, which is what makes DockerSpawner leave out ``port_bindings``,
- returns ``127.0.0.1`` and that port from ``get_ip_and_port``.

Everything else (create, start, stop, remove) is DockerSpawner's own code.
"""

from __future__ import annotations

import socket

from dockerspawner import DockerSpawner
from traitlets import default


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HostNetworkDockerSpawner(DockerSpawner):
    @default("network_name")
    def _default_network_name(self) -> str:
        return "host"

    @default("use_internal_ip")
    def _default_use_internal_ip(self) -> bool:
        return True  # no port_bindings: "host" network_mode refuses them

    async def start(self):
        self.port = free_loopback_port()
        self.ip = "127.0.0.1"  # JUPYTERHUB_SERVICE_URL: the server binds loopback only
        return await super().start()

    async def get_ip_and_port(self) -> tuple[str, int]:
        return "127.0.0.1", self.port
