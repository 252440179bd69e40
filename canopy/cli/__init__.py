"""The ``canopy`` command line: thin commands over the library."""
