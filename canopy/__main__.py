"""``python -m canopy`` runs the command line."""

from canopy.cli.main import main

main()
