"""Roman numerals, read alike by the readers (:mod:`.ingest`) and normalisation (:mod:`.text`).

Depends on nothing else in the package.
"""

from __future__ import annotations

import functools
import re

__all__ = ["roman_value"]

_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}


@functools.lru_cache(maxsize=8)
def _form(max_thousands: int) -> re.Pattern:
    """The strict form (no "IIII", "VX", "IC"), upper case, with at most *max_thousands* M's."""
    m = f"M{{0,{int(max_thousands)}}}"
    return re.compile(m + r"(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})")


def roman_value(text: str, *, max_thousands: int = 3) -> int | None:
    """Value of a well-formed Roman numeral (any case), else ``None``.

    Only the strict form is a numeral: ``"IV"`` is 4, ``"IIII"``, ``"MIX"``-like
    words that are not well formed (``"DID"``, ``"CIVIL"``) and ``""`` are not.

    Parameters
    ----------
    text : str
        The candidate, whole (nothing before or after the numeral).
    max_thousands : int, default 3
        Most leading ``M``\\ s: 3 (up to 3999, what text normalisation speaks)
        or 4 (up to 4999, what chapter headings may number; the plain-text
        reader's rule).

    Returns
    -------
    int or None
    """
    up = text.upper()
    if not up or not _form(max_thousands).fullmatch(up):
        return None
    total = 0
    for i, ch in enumerate(up):
        value = _VALUES[ch]
        nxt = _VALUES[up[i + 1]] if i + 1 < len(up) else 0
        total += -value if value < nxt else value
    return total
