"""Free loopback ports for servers on the host network.

With host networking every server needs its own port. The hub reserves a port from the moment it
is chosen until the server stops, so two concurrent spawns in one hub never pick the same one; a
port already bound by anything (another server after a hub restart, another program) is skipped
because binding to it fails.
"""

from __future__ import annotations

import random
import socket
import threading


class PortPool:
    """Ports reserved by this hub process. Thread-safe; one instance per hub."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._reserved: set[int] = set()
        self._lock = threading.Lock()

    def reserve(self, attempts: int = 50, port_range: tuple[int, int] | None = None) -> int:
        """Reserve and return a port that nothing listens on right now (from ``port_range``
        when given, else any the kernel offers)."""
        with self._lock:
            for _ in range(attempts):
                port = _unbound_port(self.host, port_range)
                if port and port not in self._reserved:
                    self._reserved.add(port)
                    return port
        raise RuntimeError(f"no free port on {self.host} after {attempts} attempts")

    def claim(self, port: int) -> None:
        """Mark a port as in use (a server found running after a hub restart)."""
        with self._lock:
            self._reserved.add(port)

    def release(self, port: int) -> None:
        with self._lock:
            self._reserved.discard(port)

    def __contains__(self, port: int) -> bool:
        with self._lock:
            return port in self._reserved


def _unbound_port(host: str, port_range: tuple[int, int] | None = None) -> int:
    """A port nothing is bound to now; 0 when the one tried in ``port_range`` is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, random.randint(*port_range) if port_range else 0))
        except OSError:
            return 0
        return s.getsockname()[1]
