"""nsjail-isolated warm Python interpreters as a Ray actor pool."""
