"""pgdr: PostgreSQL disaster recovery as one trustworthy, boring command."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pgdr")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"
