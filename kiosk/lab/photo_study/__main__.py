"""``python -m kiosk.lab.photo_study``: the command line of :mod:`kiosk.lab.photo_study.cli`."""

from __future__ import annotations

from kiosk.lab.photo_study.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
