"""The culler: retire idle and over-limit servers, warning their users first (docs/culler.md).

- ``decision``: the pure decision (keep / warn / retire) from a server's signals and limits;
- ``signals``: the I/O clients (hub API, kernels, Docker, GPUs) and the parsers of their answers;
- ``notices``: the keep-alive file and ``.ds01/notices.log`` in the project folder;
- ``state``: the state file (restarts, and the hub's home page: ``state.read_for_page``);
- ``cycle``: one cycle over all running servers; ``service``: the ``DS01Culler`` service and its
  settings; ``registration``: how ``startup.configure_services`` registers it with the hub.

Importing this package imports none of them.
"""
