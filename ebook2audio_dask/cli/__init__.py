"""The ``ebook2audio`` command line."""

from .main import cli, main, parse_chapters

__all__ = ["cli", "main", "parse_chapters"]
