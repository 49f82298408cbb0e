"""The hub's pages: the spawn form (``form``: pure checks of user_options; ``form_steps``: the
spawner's form rendering), the home and "starting" pages (``pages``) and every template
(``templates/``: the form, the hub's pages, the admin service's pages).

May import: ``limits``, ``projects``, ``gpus``, ``images``, the shared leaves; ``form_steps`` and
``pages`` are hub side (the spawner class mixes ``form_steps`` in). No service imports this
package (the admin service reads ``templates/admin`` as files only).
"""
