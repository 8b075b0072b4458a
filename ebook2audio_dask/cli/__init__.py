"""The ``ebook2audio`` command line."""

from .main import cli, main, parse_chapters
from .serve import serve
from .submit import submit

cli.add_command(submit)
cli.add_command(serve)

__all__ = ["cli", "main", "parse_chapters"]
