"""pgdr: PostgreSQL disaster recovery as one trustworthy, boring command."""

# The one place the version is written: pyproject.toml reads it from here (tool.setuptools.dynamic), so the installed
# metadata agrees, and `pgdr --version` does not import importlib.metadata (40 ms) to learn it.
__version__ = "0.1.0"
VERSION_LINE = f"pgdr {__version__}"  # what `pgdr --version` prints (pgdr.entry, and pgdr.cli for older scripts)
