"""``python -m ds01spawner.culler``: the ds01-culler service (started by the hub)."""

from .service import main

if __name__ == "__main__":
    main()
