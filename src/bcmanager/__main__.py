"""`python -m bcmanager` is `bcm`."""

from bcmanager.cli import main

main()
