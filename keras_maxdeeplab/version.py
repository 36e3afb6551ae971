"""The package's version: its one owner (pyproject.toml and conversion records read it)."""

__version__ = "0.1.0"
