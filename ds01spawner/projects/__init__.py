"""A user's projects on disk: ``names`` (project, container and client names), ``workspace``
(paths and confinement), ``files`` (files written into a project without following links),
``catalog`` (listing projects, templates of new ones), ``safepath`` (opening without links).

May import: the shared leaves only. Both the spawner and the services import it.
"""
