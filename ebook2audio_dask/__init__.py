"""ebook2audio_dask: turn ebooks into chaptered M4B audiobooks on a Dask cluster."""

__version__ = "0.1.0"
