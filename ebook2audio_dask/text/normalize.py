"""Text clean-up applied before sentence splitting."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize_text"]

# Typographic quotes and marks -> the plain forms every engine's front end knows.
_TRANSLATE = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2039": "'",
        "\u203a": "'",
        "\u2026": "...",
        "\u00a0": " ",
        "\u2007": " ",
        "\u202f": " ",
        "\u2009": " ",
        "\u200a": " ",
        "\u2002": " ",
        "\u2003": " ",
        "\u3000": " ",
        "\u00ad": None,  # soft hyphen
        "\u200b": None,
        "\u200c": None,
        "\u200d": None,
        "\u2060": None,
        "\ufeff": None,
        "\u2010": "-",
        "\u2011": "-",
    }
)
_SPACES = re.compile(r"\s+")
# French-style spaced guillemets ("« texte »"): the spaces go before they become '"'.
_OPENING_GUILLEMET = re.compile(r"([\u00ab\u2039])\s+")
_CLOSING_GUILLEMET = re.compile(r"\s+([\u00bb\u203a])")


def normalize_text(text: str) -> str:
    """Normalise Unicode, quotes, dashes and whitespace of one paragraph.

    NFC composition; curly quotes and guillemets become ASCII quotes; the
    ellipsis character becomes ``...``; soft hyphens and zero-width marks are
    dropped; every run of whitespace (including no-break spaces and newlines)
    becomes one space.  Em and en dashes are kept: the engines read them as
    pauses.

    Parameters
    ----------
    text : str
        One paragraph.

    Returns
    -------
    str
        The cleaned paragraph (may be empty).
    """
    text = unicodedata.normalize("NFC", text)
    if "\u00ab" in text or "\u00bb" in text or "\u2039" in text or "\u203a" in text:
        text = _CLOSING_GUILLEMET.sub(r"\1", _OPENING_GUILLEMET.sub(r"\1", text))
    text = text.translate(_TRANSLATE)
    return _SPACES.sub(" ", text).strip()
