"""snapshots: load CSV snapshot files into PostgreSQL exactly once."""

# The one place the version is written (pyproject.toml reads it from here); a literal keeps
# start-up free of importlib.metadata.
__version__ = "0.1.0"
