"""Network isolation steps of a spawn on the host network (see netguard.py for the mechanism).

A mixin of DS01Spawner (it uses ``docker()``, ``container_id``, ``network_name``, ``config``,
``prefix``, ``user``, ``log``). ``_network_setup`` installs the uid firewall once per hub process
when ``network_isolation = "uid-firewall"``; ``_server_port_range`` is where the hub picks server
ports; ``_verify_port_owner`` refuses a server whose port is held by anything but its own
container. docs/security-availability.md#network.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from urllib.parse import urlparse

from traitlets import Bool, CaselessStrEnum, Int, List, Unicode
from traitlets.config import LoggingConfigurable

from ..engine.port_owner import PortCheckError
from ..errors import DOCKER_ERRORS, user_error
from .netguard import (
    NetGuardError,
    apply_firewall,
    chain_name,
    firewall_rules,
    parse_range,
    read_ipv6_loopback,
)

DEFAULT_SERVER_PORTS = "20000-29999"
#: seconds the port-owner check may take (on a swarm: a helper container on the node)
PORT_CHECK_TIMEOUT = 20.0
PORT_TAKEN_MESSAGE = (
    "Another program took your server's network port while it was starting, so DS01 did not "
    "connect you to it. Launch again; an admin has been told."
)
ISOLATION_DOWN_MESSAGE = (
    "This server cannot start servers safely right now (its network isolation could not be "
    "set up). An admin has been told."
)


class NetworkSteps(LoggingConfigurable):
    """Traits and methods that keep user servers apart on the host's loopback."""

    network_isolation = CaselessStrEnum(
        ["off", "uid-firewall"],
        "off",
        help="""How user servers on the host network are kept apart.

        ``"off"`` (the demo): every container shares the host's loopback and can connect to
        other users' servers directly (they still require their owner's token or cookie) and
        to the proxy's API port (it requires the proxy's token).
        ``"uid-firewall"`` (PRODUCTION): the hub installs iptables rules (chain
        ``DS01-<prefix>`` on ``OUTPUT -o lo``, with ``ip6tables`` too where ``::1`` is up) that
        refuse TCP connections and UDP datagrams from ``isolated_uids`` to ``server_ports``
        and to ``protected_ports`` plus the proxy's API port; the hub and the proxy (root)
        still reach every server. Needs the hub to run as root with iptables' owner match; a
        launch is refused (HTTP 503) while the rules cannot be installed (also when ``::1``
        is up and ``ip6tables`` is missing). See docs/security-availability.md#network.
        Default: ``"off"``. Example: ``c.DS01Spawner.network_isolation = "uid-firewall"``.
        """,
    ).tag(config=True)

    isolated_uids = Unicode(
        "1000-4294967294",
        help="""uids whose connections the ``uid-firewall`` refuses: the range of the students'
        accounts and ``user_uid`` (the fallback). Must not contain the uid of the hub or the
        proxy. Default: ``"1000-4294967294"``.
        Example: ``c.DS01Spawner.isolated_uids = "2000-59999"``.
        """,
    ).tag(config=True)

    server_ports = Unicode(
        "",
        help="""Ports the hub picks user servers' ports from (host network), e.g.
        ``"20000-29999"``. Keep it outside the kernel's ephemeral range
        (``/proc/sys/net/ipv4/ip_local_port_range``). Empty: any free port, or
        ``"20000-29999"`` when ``network_isolation`` is ``"uid-firewall"`` (the rules need a
        fixed range). Default: ``""``. Example: ``c.DS01Spawner.server_ports = "20000-24999"``.
        """,
    ).tag(config=True)

    protected_ports = List(
        Int(),
        [],
        help="""More loopback TCP ports the ``uid-firewall`` closes to ``isolated_uids``, e.g. a
        Docker TCP port or a database that listens on loopback. The proxy's API port is always
        closed. Default: ``[]``. Example: ``c.DS01Spawner.protected_ports = [2375, 5432]``.
        """,
    ).tag(config=True)

    check_port_owner = Bool(
        True,
        help="""Before a server on the host network is reported ready, check that the socket
        listening on its port belongs to a process of its own container (``/proc/net/tcp`` and
        the container's processes); a port another user's process took is refused with a
        message and an error in the hub's log. Needs the hub to run as root. On a swarm it runs
        on the server's node, in a short-lived helper container of the base image (by id) with
        the node's pid and network namespaces (docs/scale-out.md#hub-side-checks-on-a-swarm);
        a check that cannot run refuses the launch.
        Default: ``True``. Example: ``c.DS01Spawner.check_port_owner = False``.
        """,
    ).tag(config=True)

    _firewall_ready: set[str] = set()  # chains installed by this hub process
    _firewall_lock: asyncio.Lock | None = None  # made on the hub's event loop, at first use

    def _server_port_range(self) -> tuple[int, int] | None:
        text = self.server_ports or (
            DEFAULT_SERVER_PORTS if self.network_isolation == "uid-firewall" else ""
        )
        return parse_range(text, "server_ports", 1024, 65535) if text else None

    def _protected_ports(self) -> list[int]:
        ports = list(self.protected_ports)
        api_url = self.config.get("ConfigurableHTTPProxy", {}).get("api_url")
        if api_url and urlparse(api_url).port:
            ports.append(urlparse(api_url).port)
        return ports

    async def _network_setup(self) -> None:
        """Install the uid firewall once per hub process; fail closed."""
        if self.network_isolation != "uid-firewall":
            return
        if getattr(self, "on_swarm", False):
            return  # servers are in their nodes' network namespaces: see swarm_steps
        chain = chain_name(self.prefix)
        if NetworkSteps._firewall_lock is None:
            NetworkSteps._firewall_lock = asyncio.Lock()
        async with NetworkSteps._firewall_lock:  # two first launches install it once
            await self._install_firewall(chain)

    async def _install_firewall(self, chain: str) -> None:
        if chain in NetworkSteps._firewall_ready:
            return
        try:
            uids = parse_range(self.isolated_uids, "isolated_uids", 1, 4294967294)
            rules = firewall_rules(chain, uids, self._server_port_range(), self._protected_ports())
            await asyncio.to_thread(apply_firewall, chain, rules)
            families = "IPv4"
            if await asyncio.to_thread(read_ipv6_loopback):
                if shutil.which("ip6tables") is None:
                    raise NetGuardError(
                        "IPv6 loopback (::1) is up but ip6tables is missing, so students could "
                        "reach servers listening on ::1: install ip6tables (Debian: iptables), "
                        "or turn IPv6 off on lo (sysctl net.ipv6.conf.lo.disable_ipv6=1)"
                    )
                await asyncio.to_thread(apply_firewall, chain, rules, None, "ip6tables")
                families = "IPv4 and IPv6"
        except (NetGuardError, OSError) as e:
            self.log.error("Network isolation (uid-firewall) could not be set up: %s", e)
            raise user_error(503, ISOLATION_DOWN_MESSAGE) from e
        NetworkSteps._firewall_ready.add(chain)
        self.log.info(
            "Network isolation (%s, TCP and UDP): chain %s refuses uids %s to ports %s and %s",
            families,
            chain,
            self.isolated_uids,
            self._server_port_range(),
            self._protected_ports(),
        )

    async def _verify_port_owner(self, ip: str, port: int) -> None:
        """The socket on ``ip:port`` must be held by this server's container: checked where the
        server runs (this host's /proc, or on a swarm its node's, ``engine.port_holder``); a
        check that cannot run or does not answer in ``PORT_CHECK_TIMEOUT`` s refuses the launch."""
        if not self.check_port_owner:
            return
        where = f" on node {self.ip}" if getattr(self, "on_swarm", False) else ""
        t0 = time.monotonic()
        try:
            holder = await asyncio.wait_for(
                self.engine.port_holder(self.container_id, ip, port, self.image),
                PORT_CHECK_TIMEOUT,
            )
        except (PortCheckError, asyncio.TimeoutError, *DOCKER_ERRORS, OSError) as e:
            self.log.error(
                "Cannot check who holds port %s:%s of user=%s server=%s%s: %s: refused "
                "(fails closed; see docs/scale-out.md#hub-side-checks-on-a-swarm)",
                ip,
                port,
                self.user.name,
                self.name,
                where,
                str(e) or f"no answer in {PORT_CHECK_TIMEOUT:.0f} s",
            )
            raise user_error(503, PORT_TAKEN_MESSAGE) from e
        if holder.node:
            where = f" on node {holder.node}"
        if holder.ours:
            self.log.info(
                "Port %s:%s%s is held by its server's container (checked in %.2f s)",
                ip,
                port,
                where,
                time.monotonic() - t0,
            )
            return
        if not holder.readable:
            self.log.error(
                "Cannot check who holds port %s of user=%s server=%s%s: the processes of its "
                "container (pids %s) are not readable in /proc. The hub must run as root, or "
                "set c.DS01Spawner.check_port_owner = False (see docs/security-availability.md)",
                port,
                self.user.name,
                self.name,
                where,
                list(holder.pids),
            )
            raise user_error(503, PORT_TAKEN_MESSAGE)
        self.log.error(
            "Port %s:%s of user=%s server=%s is held by socket inode %s%s, not by its container "
            "%s (pids %s): refused (another process took the port; see ss -ltnpe)",
            ip,
            port,
            self.user.name,
            self.name,
            holder.inode,
            where,
            (self.container_id or "")[:12],
            list(holder.pids),
        )
        raise user_error(503, PORT_TAKEN_MESSAGE)
