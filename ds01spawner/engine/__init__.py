"""The container engine behind one narrow interface (issue 16).

Owns: ``base`` (the ``ContainerEngine`` protocol and its plain records: ``Placement``,
``CreateRequest``, ``ServerState``, ``ServerRecord``), ``docker`` (``DockerEngine``: one Docker
daemon, the hub's one client and thread pool) and ``services`` (``ServiceEngine``: the
synchronous client of the culler and the HTTP services; ``service_engine`` picks it or
``swarm_services.SwarmServiceEngine``, the services' view of a swarm, from the hub's settings).

May import: docker-py and nothing of DS01 (both sides import this package; a second engine,
e.g. Swarm, implements ``base.ContainerEngine`` in its own package); ``swarm_services`` also
imports ``swarm/``, ``gpus.table`` and ``projects.names`` (never the spawner side).
"""
