"""What the integration tests and the benchmarks share to drive a real hub (``harness.hub``).

Not part of the installed package (setup.cfg excludes it, like ``tests`` and ``benchmarks``).
"""
