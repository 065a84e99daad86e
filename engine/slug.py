"""The slug of a tag label: the ``<slug>`` of its column ``tag_<slug>``.

One function owns the rule: the tagger names columns with it and the ``tag('...')`` SQL macro
(engine/query/filters.py) calls it as a DuckDB function, so a label and its query can never be slugged
two ways (SQL ``lower()`` and Python ``str.lower()`` disagree on 'İ', for one). Only the standard library
here: filters.py imports this module.
"""

from __future__ import annotations

import re
import unicodedata

from songseek.engine.errors import UsageError

_NOT_SLUG = re.compile(r"[^a-z0-9]+")
# Latin letters that casefold and NFKD leave whole; without this 'Øresund' would slug as 'resund'.
_LATIN_BASE = str.maketrans({"ı": "i", "ø": "o", "æ": "ae", "œ": "oe", "đ": "d", "ð": "d", "ł": "l", "þ": "th"})


def slug_or_empty(label: str) -> str:
    """'Hip Hop' → 'hip_hop', 'İstanbul pop' → 'istanbul_pop', 'Straße' → 'strasse', 'Café' (composed or
    with a combining accent) → 'cafe'; '' when nothing of the label is a Latin letter or a digit."""
    # Compatibility caseless form (Unicode §3.13): NFKD, casefold, NFKD again; then accents (combining
    # marks) dropped, so one label typed in any normalisation form or case gets one slug.
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", label).casefold())
    base = "".join(c for c in folded if not unicodedata.combining(c)).translate(_LATIN_BASE)
    return _NOT_SLUG.sub("_", base).strip("_")


def label_slug(label: str) -> str:
    """The SQL-safe column suffix of a label (``slug_or_empty``); a label without one is refused."""
    slug = slug_or_empty(label)
    if not slug:
        raise UsageError(f"label {label!r} has no Latin letter or digit, so it cannot name a tag column; "
                         "add a Latin spelling (e.g. 'Рок' → 'rok')")
    return slug
