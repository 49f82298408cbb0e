"""What the integration tests and the benchmarks share to drive a real hub (``harness.hub``) and a
real two-node Docker Swarm on one machine (``harness.swarm``, ``harness.swarm_host``).

Not part of the installed package (setup.cfg excludes it, like ``tests`` and ``benchmarks``).
"""
