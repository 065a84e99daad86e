"""What a query describes, read from its form: one moment of a track, a whole track, or not known.

The rerank that serves one kind best loses on the other: a description of one moment wants a track's best
window (max pooling), a description of a whole track wants all of its windows (mean pooling), and the
similarities of one query do not show which it is (docs/fusion.md measures both). The query's *form* often
does, so the default rerank ``auto`` asks this module and runs ``part``, ``whole`` or ``hedge``
(engine/query/fusion.py):

- a text of one sentence ("a saxophone solo over soft drums") describes a moment: ``part``;
- a text of several sentences that the text tower reads whole describes a track ("A calm piece. It
  opens with..."): ``whole``;
- a tag list ("jazz, saxophone, calm"), a text past the token limit (scored chunk by chunk, each chunk
  a stretch of the track), a one-window audio clip and a bare vector: not known, ``hedge``;
- an audio excerpt of two windows or more is matched window by window instead (``align``,
  engine/query/align.py; ``Library.search`` decides, before any kind is read);
- audio→text (a track ranks texts; benchmarks only): the kind the candidate texts share, if they share one.

An excerpt is a moment, but its vector is the mean of its windows and rarely sits on the library's window
grid, so it matches two windows in part; measured, max pooling is not its best rerank (docs/fusion.md).

A caller who knows better passes ``--rerank part`` or ``--rerank whole`` (or saves a mode per library with
``songseek bench rerank --save``); ``auto`` only decides when nobody has.
"""

from __future__ import annotations

import re
from typing import Literal

Kind = Literal["part", "whole"] | None
KINDS = ("part", "whole")  # what a caller may state (query files' ``kind`` column)

# A sentence ends at . ! or ? followed by white space and then more text.
_SENTENCE_BREAK = re.compile(r"[.!?]+\s+(?=\S)")
TAG_MAX_WORDS = 3
TAG_MIN_ITEMS = 3


def is_tag_list(text: str) -> bool:
    """A comma list of at least TAG_MIN_ITEMS short items (each TAG_MAX_WORDS words or fewer) with no
    sentence punctuation ("A calm intro: piano, soft, slow." is a sentence)."""
    if any(ch in text for ch in ".:;!?"):
        return False
    items = [x.strip() for x in text.split(",")]
    return len(items) >= TAG_MIN_ITEMS and all(0 < len(x.split()) <= TAG_MAX_WORDS for x in items)


def text_kind(text: str, n_chunks: int = 1) -> Kind:
    """The kind of a text from its form, when the text tower reads it in one piece (``n_chunks`` = 1); a
    text embedded as several chunks is scored chunk by chunk and its kind is not known (None)."""
    if n_chunks != 1 or is_tag_list(text):
        return None
    return "whole" if _SENTENCE_BREAK.search(text.strip()) else "part"


def shared_kind(kinds: list[Kind]) -> Kind:
    """The kind of a set of candidate texts when they all have one (audio→text ranks texts for a track:
    scores of different modes are not comparable across candidates, so mixed forms are not known)."""
    distinct = set(kinds)
    return distinct.pop() if len(distinct) == 1 else None


def resolve_mode(mode: str, kind: Kind) -> str:
    """The rerank mode a query runs: ``auto`` becomes part, whole or hedge by its kind; others stay."""
    if mode != "auto":
        return mode
    return kind if kind is not None else "hedge"
