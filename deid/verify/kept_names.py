"""Short name components inside attributes kept by --keep.

The false-positive rule (deid/verify/values.py) drops values shorter than MIN_LEN characters, so a
family name such as 'Roe' or 'Li' is never searched for: searched everywhere, it would match codes
and vendor words ('GE', 'LEE' in a kernel name) and quarantine ordinary files. An attribute kept
only because the user named it in --keep, though, is free text the profile would have removed (a
StudyDescription 'follow-up Roe'): there every component of every person name of the input, of any
length from 2 characters, is searched as a whole token (no letter or digit on either side).
Name prefixes and suffixes ('Mr', 'Dr', 'Jr') are not searched: they name no one, and 'MR' is a
modality. A kept description holding a short word that happens to equal a name part ('HE stain' and
a patient named He) quarantines: a false positive on the safe side, and only under --keep.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from deid.verify.values import MIN_LEN, LeakHit, element_texts, name_parts

_SHORT_MIN = 2
_LETTERS = re.compile(r"[^\W\d_]+")
# Prefixes and suffixes of a name say nothing of who it is, and some are also clinical words ('MR').
_HONORIFICS = frozenset({"mr", "mrs", "ms", "dr", "jr", "sr", "md", "do", "rn", "phd", "ii", "iii", "iv"})


def short_name_parts(ds: Any) -> dict[str, str]:
    """Casefolded components of the dataset's standard person names (any depth) that are shorter than
    MIN_LEN, at least 2 characters and letters only (the ones the ordinary harvest leaves out), each
    with the keyword of an attribute it came from."""
    found: dict[str, str] = {}
    for elem in _elements(ds, 0):
        if elem.VR != "PN" or elem.tag.is_private:
            continue
        for text in element_texts(elem):
            for group in text.split("="):
                # FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX: the last two are not the person's names.
                parts = name_parts("^".join(group.split("^")[:3])) if "^" in group else name_parts(group)
                for part in parts:
                    word = part.strip(" .,")
                    if word.casefold() in _HONORIFICS:
                        continue
                    if _SHORT_MIN <= len(word) < MIN_LEN and _LETTERS.fullmatch(word):
                        found.setdefault(word.casefold(), elem.keyword or "person name")
    return found


def names_in_kept(before: Any, after: Any, user_kept: frozenset[int], relpath: str) -> list[LeakHit]:
    """A hit for every --keep'd attribute of `after` whose text holds a short name part of `before`."""
    if not user_kept:
        return []
    short = short_name_parts(before)
    if not short:
        return []
    hits: list[LeakHit] = []
    for elem in _elements(after, 0):
        tag = int(elem.tag)
        if tag not in user_kept or elem.VR == "SQ":
            continue
        words = {w.casefold() for text in element_texts(elem) for w in _tokens(text)}
        location = f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {elem.keyword or 'kept element'}"
        hits += [LeakHit(relpath, short[word], location) for word in sorted(words & short.keys())]
    return hits


def _tokens(text: str) -> list[str]:
    # Whole tokens: a run of letters with no letter or digit on either side.
    return [m.group(0) for m in re.finditer(r"(?<![^\W_])[^\W\d_]+(?![^\W_])", text)]


def _elements(ds: Any, depth: int) -> Iterator[Any]:
    if depth > 64:
        return
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value or ():
                yield from _elements(item, depth + 1)
