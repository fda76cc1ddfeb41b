"""Clinical wording repeated in kept codes is not an identifier: the descriptor-echo rule.

The profile removes free-text descriptions (RequestedProcedureDescription, ProtocolName, ...) and
keeps coded items (CodeMeaning of a procedure code, ConvolutionKernel). Real instances repeat the
same words in both ("CT PE CHEST"), so a leak check that harvests the description finds it in the
kept code and would quarantine every ordinary clinical file.

A harvested value is *descriptive*, and a hit of it a `descriptor_echo` note in the audit rather
than a leak, only when all of these hold:
- every attribute it was harvested from is a descriptive one (keyword naming a description,
  protocol, procedure, body part, kernel or code meaning; or a value the engine recorded without
  a keyword) - never a name, ID, date, institution, address, private element or file name;
- it holds no digit (IDs, dates, accession numbers, ages all carry digits);
- none of its words (3 letters or more) is a word of any other harvested value: a description
  that contains the patient's, a physician's or the institution's name, or a word of an ID or of
  the file name, still quarantines.
A harvested value whose whole text equals the whole value of an attribute the profile kept in the
same instance (a private element repeating the kept ConvolutionKernel 'FL04') is an echo too: the
profile decided that value may stay. So is a value equal to the wording the de-identifier writes
itself (DeidentificationMethod and its code meanings, which an input de-identified before
repeats), and a private element's text contained in such a kept value (a vendor element repeating
the kept ManufacturerModelName cut to 15 characters, 'LightSpeed Ultr'). Values kept only because
of --keep never count as kept here, and any other value merely *containing* a kept value, or
contained in one (a name inside a --keep'd description), is still a leak.
Everything else found in an output remains a leak.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from deid.verify.values import LeakHit, MergedValues, PhiLike, PhiValue, as_values

ECHO_PREFIX = "descriptor_echo:"
_DESCRIPTIVE_KIND = re.compile(r"(Description|ProtocolName|Procedure|BodyPart|Kernel|CodeMeaning)$")
_ENGINE_KIND = "value"  # values the profile engine recorded while removing them (no keyword)
_WORD = re.compile(r"[^\W\d_]{3,}")
# What the de-identifier writes itself (DeidentificationMethod and its code sequence): an input
# that was de-identified before may carry the same wording, which is then no leak.
_OWN_VOCABULARY = (0x00120063, 0x00120064)
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})


def _descriptive_kinds(kinds: Sequence[str]) -> bool:
    keyworded = [k for k in kinds if k != _ENGINE_KIND]
    return bool(keyworded) and all(_DESCRIPTIVE_KIND.search(k) for k in keyworded)


def _words(text: str) -> set[str]:
    return {w.casefold() for w in _WORD.findall(text)}


def kept_texts(before: Any, after: Any, user_kept: frozenset[int] = frozenset()) -> frozenset[str]:
    """Whole text values (casefolded) the profile left unchanged: the same tag holds the same text
    somewhere in the input dataset and somewhere in the de-identified one. Tags in `user_kept`
    (--keep) are left out: the user's choice does not make a value safe for the leak check."""

    def texts(ds: Any) -> set[tuple[int, str]]:
        found: set[tuple[int, str]] = set()
        for elem in ds.iterall():
            if elem.VR not in _TEXT_VRS or elem.tag.is_private or int(elem.tag) in user_kept:
                continue
            # Multi-valued text (ImageType ORIGINAL\PRIMARY\LOCALIZER) keeps each of its values.
            values = [elem.value] if isinstance(elem.value, str) else list(elem.value or [])
            found |= {(int(elem.tag), v.strip().casefold()) for v in values if isinstance(v, str)}
        return found

    own = {
        elem.value.strip().casefold()
        for tag in _OWN_VOCABULARY
        if tag in after
        for elem in ([after[tag]] if after[tag].VR != "SQ" else [e for item in after[tag].value for e in item])
        if isinstance(elem.value, str)
    }
    return frozenset(text for _, text in texts(before) & texts(after) if text) | frozenset(t for t in own if t)


def mark_descriptive(values: Iterable[PhiLike], kept: frozenset[str] = frozenset()) -> list[PhiValue]:
    """The values, merged as the scan merges them, echoes relabelled with ECHO_PREFIX: descriptive
    ones, and (with `kept` from kept_texts) those equal to a value the profile kept."""
    merged = as_values(values)
    # A set: an instance has hundreds of values, and a list made this check quadratic (~2 ms a file).
    candidates = {
        v
        for v in merged
        if _is_kept(v, kept) or (_descriptive_kinds(v.kind.split("/")) and not any(c.isdigit() for c in v.text))
    }
    others: set[str] = set()
    for value in merged:
        if value not in candidates:
            others |= _words(value.text)
    return MergedValues(
        PhiValue(value.text, ECHO_PREFIX + value.kind)
        if value in candidates and (_is_kept(value, kept) or not _words(value.text) & others)
        else value
        for value in merged
    )


def _is_kept(value: PhiValue, kept: frozenset[str]) -> bool:
    text = value.text.strip().casefold()
    if text in kept:
        return True
    private_only = set(value.kind.split("/")) <= {"private", _ENGINE_KIND} and "private" in value.kind
    return private_only and any(text in k for k in kept)


def is_echo(hit: LeakHit) -> bool:
    return hit.value_kind.startswith(ECHO_PREFIX)


def split_echoes(hits: Iterable[LeakHit]) -> tuple[list[LeakHit], list[LeakHit]]:
    """(leaks, descriptor echoes) of one output's hits."""
    leaks: list[LeakHit] = []
    echoes: list[LeakHit] = []
    for hit in hits:
        (echoes if is_echo(hit) else leaks).append(hit)
    return leaks, echoes
