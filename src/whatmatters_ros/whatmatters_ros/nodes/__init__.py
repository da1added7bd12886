"""One module per node; each has a node class and ``main(args=None)``."""
