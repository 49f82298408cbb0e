"""The ``ds01-admin`` service: the GPU map, usage against limits, actions, metrics (for hub
admins only). ``views`` builds the rows as dicts; ``exemptions`` edits the limits file;
``service`` holds the thin tornado handlers."""
