"""The hub side's orchestration: the ``DS01Spawner`` class and what a launch is made of.

Owns: ``spawner`` (the class: start/poll/stop, the route plan -> image -> allocate+create -> wait),
``traits`` (its settings), ``launch`` (``LaunchPlan``, ``LaunchPhases``), the steps still mixed
into the class (``gpu_steps``, ``image_steps``, ``build_limits``, ``limit_steps``,
``network_steps``, ``session_steps``), the container as data (``container_spec``), the identity
files (``passwd``), readiness, ports, the host-network guard (``netguard``), progress, and the
hub's configuration of its services (``startup``).

May import: everything of the package except the services' entry modules. Only the hub process
imports this package (tests/unit/test_layout.py: no service reaches it). This ``__init__`` imports
nothing, so that ``ds01spawner.spawner.launch`` stays cheap.
"""
