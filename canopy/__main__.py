"""``python -m canopy`` runs the command line."""

from canopy.cli.main import main

if __name__ == "__main__":  # not when a Dask worker process started by spawn imports this module
    main()
