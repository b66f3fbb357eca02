"""``python -m sslandmarks`` behaves exactly like the ``sslandmarks`` console script."""

from sslandmarks.cli import main

if __name__ == "__main__":  # not under multiprocessing's spawn, which imports this module as __mp_main__
    raise SystemExit(main())
