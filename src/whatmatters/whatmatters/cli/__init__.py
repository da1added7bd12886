"""The ``whatmatters`` command-line interface."""
