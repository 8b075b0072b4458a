"""W3C Pronunciation Lexicon Specification (PLS 1.0) documents.

Read by the EPUB reader (a book's own lexicons, :mod:`.ingest.epub`) and by
user lexicons (:mod:`.text.lexicon`); it depends on neither, only on
:mod:`.safexml` and :mod:`.model`.
"""

from __future__ import annotations

from lxml import etree

from .model import Pronunciation
from .safexml import local_name, safe_xml

__all__ = ["PLS_NS", "alphabet_name", "parse_pls"]

PLS_NS = "http://www.w3.org/2005/01/pronunciation-lexicon"


def alphabet_name(value: str | None, default: str = "ipa") -> str:
    """A phoneme alphabet's name, lower case (``"X-SAMPA"``, ``"sampa"`` -> ``"x-sampa"``);
    *default* when *value* is empty."""
    value = (value or default).strip().lower()
    if value in ("xsampa", "x_sampa", "sampa"):
        value = "x-sampa"
    return value


def parse_pls(
    data: bytes, *, origin: str = "pls", language: str | None = None, source: str = ""
) -> list[Pronunciation]:
    """Read a W3C Pronunciation Lexicon Specification (PLS 1.0) document.

    Every ``<lexeme>`` gives one entry per ``<grapheme>``: its first
    ``<phoneme>`` (in the lexeme's or the lexicon's ``alphabet``, IPA by
    default) and/or its first ``<alias>``.  The XML is parsed with entity
    expansion and network access off.

    Parameters
    ----------
    data : bytes
        The PLS file.
    origin : str
        Recorded in each entry (``"pls"`` for a book's, ``"user"`` for ``--lexicon``).
    language : str, optional
        Language of the entries when the lexicon's ``xml:lang`` is missing.
    source : str
        For error messages.

    Returns
    -------
    list of Pronunciation

    Raises
    ------
    ValueError
        When *data* is not an XML document with a ``lexicon`` root.
    """
    try:
        root = safe_xml(data)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"{source or 'PLS lexicon'}: not valid XML ({exc})") from None
    if local_name(root.tag) != "lexicon":
        raise ValueError(
            f"{source or 'PLS lexicon'}: not a PLS lexicon (root element <{local_name(root.tag)}>)"
        )
    lang = root.get("{http://www.w3.org/XML/1998/namespace}lang") or language or ""
    default_alphabet = alphabet_name(root.get("alphabet"))
    entries: list[Pronunciation] = []
    for lexeme in root:
        if local_name(lexeme.tag) != "lexeme":
            continue
        graphemes = [_text(g) for g in lexeme if local_name(g.tag) == "grapheme"]
        phonemes = [g for g in lexeme if local_name(g.tag) == "phoneme" and _text(g)]
        aliases = [_text(g) for g in lexeme if local_name(g.tag) == "alias" and _text(g)]
        phoneme = _text(phonemes[0]) if phonemes else ""
        alphabet = (
            alphabet_name(phonemes[0].get("alphabet"), default_alphabet)
            if phonemes
            else default_alphabet
        )
        alias = aliases[0] if aliases else ""
        if not (phoneme or alias):
            continue
        for grapheme in graphemes:
            if grapheme:
                entries.append(Pronunciation(grapheme, phoneme, alphabet, lang, origin, alias))
    return entries


def _text(el) -> str:
    return " ".join("".join(el.itertext()).split())
