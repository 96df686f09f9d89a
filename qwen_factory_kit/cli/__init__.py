"""The ``qfk`` command line: thin click commands over the Python API (no logic here)."""
