"""`python -m bcmanager.cli` is `bcm`."""

from bcmanager.cli import main

main()
