"""Docker Swarm: pure builders and parsers for running DS01 servers as one-task services.

- :mod:`.service_spec`: the service that runs one server (from the single-engine container spec).
- :mod:`.tasks`: the swarm's nodes, services and tasks as DS01 records; the cluster's devices and
  the allocation table read back from the tasks' assigned generic resources.
- :mod:`.placement`: which node and device kind a GPU launch asks Swarm for.

Nothing here does I/O: the engine (``ds01spawner/engine/``) calls Docker and passes the dicts.
See docs/scale-out.md.
"""
