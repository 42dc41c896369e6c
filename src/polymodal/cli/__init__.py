"""Command-line interface: thin functions over the Python API."""
