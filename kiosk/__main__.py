"""`python -m kiosk` runs the command line."""

from kiosk.cli import main

main()
