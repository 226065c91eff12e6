"""``python -m minifaktory``: the same as the ``minifaktory`` command."""

from minifaktory.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
