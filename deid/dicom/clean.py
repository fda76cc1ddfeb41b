"""The one cleaner of descriptive text: what "clean" (C) means for free text in this pipeline.

`clean_text(text, known)` is applied wherever text is cleaned rather than removed or dummied: the C
of --clean_descriptors, free text in the items of a sequence the profile cleans (code sequences under
C included), and standard attributes Table E.1-1 does not list (deid/dicom/unlisted.py). With
`known_only=True` it cuts only step 1, for the technical attributes of the unlisted safe list.

Cut, in this order:
1. known identifying values of the instance (`known`, normalised with elements.normalise: the name
   components, IDs and date spellings of the attributes the profile removes), as a token, as an
   alphanumeric part of a token, or as a run of up to six consecutive tokens (multi-word values such
   as an institution name);
2. e-mail addresses, and telephone numbers (seven or more digits joined by spaces, dots, dashes,
   slashes or parentheses, an optional leading +);
3. dates: numeric (2024-01-15, 15/01/2024, 1.15.24) and with month names (15 Jan 2024, January 15,
   2024, Jan 2024); a month name alone ("May") is a word and stays;
4. times: 10:30, 10:30:15.5, 10h30, 10 am, 10.30 p.m.;
5. person-name patterns: an honorific (Dr, Mr, Mrs, Ms, Miss, Mx, Prof, Sister, Nurse) or a label
   (Patient:, Name:, MRN:, DOB:, ID:, Physician:, Operator:, Tech:) with the up to three words that
   follow it; a verb of authorship followed by "by" (read by, signed by, dictated by, performed by,
   ...) with the up to three capitalised words that follow; an initial before a capitalised surname
   (J. Smith); and a DICOM person name (words joined by ^);
6. ID-like tokens: a token (text between spaces, stripped of surrounding punctuation) holding at least
   one letter and at least three digits (MRN12345, A-1234, ACC2024001), or a run of five or more
   digits (123456); a number with a unit (120kV, 100mg, 2.5mm, 30ms) is not ID-like.

Kept: plain clinical wording, short technical tokens with few digits (T1, T2*, 3D, L4-L5, b0, B30f),
numbers under five digits and numbers with units. What is cut leaves no placeholder; the caller puts
CLEANED where a value would be empty. A text over MAX_CLEAN_CHARS (1 MiB) is cut whole. Only step
1's cuts are reported back (`CleanResult.known_cut`): the leak check looks for known values; a
heuristic cut is not a value of the input that must be absent everywhere, and searching for it would
quarantine outputs where the same token is legitimately kept (a sequence name holding "b1000").

Limits: a person's name written without a cue (no honorific, label, "by", initial or ^) is not
recognised unless it is a known value of the instance; so the leak check, which searches every
output for the harvested names, stays the safety net.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from deid.dicom.elements import normalise

MAX_KNOWN_RUN = 6
# Longer text is no descriptor: it is cut whole (the caller writes CLEANED) rather than searched.
MAX_CLEAN_CHARS = 1024 * 1024

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
# Every repetition is bounded, so that no input text (a hostile UT of digits and spaces) makes a
# pattern backtrack more than a few dozen characters from each start.
_PHONE = re.compile(r"(?<![\w.])\+?\(?\d[\d\s().\-/]{5,24}\d(?![\w.])")
_PATTERNS = tuple(
    re.compile(p)
    for p in (
        r"[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}",  # e-mail
        r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b",  # ISO dates
        r"\b\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}\b",  # US and European dates
        rf"\b\d{{1,2}}(?i:st|nd|rd|th)?\s+(?i:{_MONTH})(?:,?\s+\d{{2,4}})?(?!\w)",  # 15 Jan 2024
        rf"\b(?i:{_MONTH})\s+\d{{1,2}}(?i:st|nd|rd|th)?(?:,?\s+\d{{2,4}})?\b",  # January 15, 2024
        rf"\b(?i:{_MONTH})\s+\d{{4}}\b",  # Jan 2024
        r"\b\d{1,2}[:h]\d{2}(?::\d{2}(?:\.\d+)?)?(?:\s*(?i:[ap]\.?m)\b\.?)?",  # 10:30, 10h30 pm
        r"\b\d{1,2}(?:\.\d{2})?\s*(?i:[ap]\.?m)\b\.?",  # 10 am, 10.30 p.m.
        # Honorifics in any case ("Ms" and "Miss" only as written for a person), then capitalised words.
        r"(?<!\d)(?<!\d\s)\b(?:(?i:dr|mr|mrs|mx|prof|sister|nurse)|Ms|Miss)\b\.?(?:\s+[A-Z][\w'\-]*\.?){1,3}",
        r"\b(?i:patient|pt|name|mrn|dob|id|physician|operator|tech|technologist)\s*[:#]\s*\S+(?:\s+\S+){0,2}",
        r"\b[^\s^]{1,64}\^\S{0,192}",  # DICOM person name
    )
)
# Names after authorship verbs must be capitalised (or all capitals): "read by Smith", not "by hand".
_AUTHORED = re.compile(
    r"\b(?i:read|signed|dictated|reported|performed|referred|approved|transcribed|reviewed|verified|"
    r"requested|ordered|scanned|examined|seen)\s+(?i:by)\s+(?:[A-Z][\w'\-]*\.?(?:\s+|$)){1,3}"
)
_INITIAL_SURNAME = re.compile(r"\b[A-Z]\.\s?[A-Z][a-z'\-]+")
_UNIT = re.compile(
    r"\d+(?:[.,]\d+)?(?:mm|cm|m|ml|l|mg|g|kg|mcg|ug|ms|s|sec|min|h|hz|khz|mhz|t|kv|kvp|ma|mas|gy|mgy|cgy|"
    r"msv|sv|mbq|mci|bq|ci|%|x|deg)",
    re.IGNORECASE,
)
_PUNCT = "\"'()[]{}<>,;:.!?*"


@dataclass(frozen=True)
class CleanResult:
    text: str
    known_cut: tuple[str, ...]

    @property
    def emptied(self) -> bool:
        return not self.text.strip()


def clean_text(text: str, known: Collection[str], known_only: bool = False) -> CleanResult:
    """`text` with the identifying content of the module docstring cut; see there for the rules."""
    if len(text) > MAX_CLEAN_CHARS:
        return CleanResult("", ())
    tokens = re.split(r"(\s+)", text)
    cut_known: list[str] = []
    _cut_known(tokens, known, cut_known)
    result = "".join(tokens)
    if not known_only:
        result = _PHONE.sub(_phone, result)
        for pattern in _PATTERNS:
            result = pattern.sub(" ", result)
        result = _AUTHORED.sub(_keep_verb, result)
        result = _INITIAL_SURNAME.sub(" ", result)
        result = "".join(_without_id(t) for t in re.split(r"(\s+)", result))
    return CleanResult(_tidy(result) if result != text else text, tuple(cut_known))


def _cut_known(tokens: list[str], known: Collection[str], cut: list[str]) -> None:
    """Blank, in place, the tokens (even indices; odd ones are whitespace) that hold a known value."""
    if not known:
        return
    words = list(range(0, len(tokens), 2))
    normal = [normalise(tokens[i]) for i in words]
    for start in range(len(words)):
        for length in range(min(MAX_KNOWN_RUN, len(words) - start), 0, -1):
            joined = "".join(normal[start : start + length])
            if length > 1 and joined in known:
                run = words[start : start + length]
                cut.append(" ".join(tokens[i] for i in run))
                for index in run:
                    tokens[index] = ""
                break
        token = tokens[words[start]]
        if not token:
            continue
        parts = [normalise(p) for p in re.split(r"[^0-9A-Za-z]+", token) if p]
        if normalise(token) in known or any(p in known for p in parts):
            cut.append(token)
            tokens[words[start]] = ""


def _phone(match: re.Match[str]) -> str:
    found = match.group(0)
    # Fewer than seven digits: a dose, a count or a measurement, not a telephone number.
    return " " if sum(ch.isdigit() for ch in found) >= 7 else found


def _keep_verb(match: re.Match[str]) -> str:
    return match.group(0).split()[0] + " by "


def _without_id(token: str) -> str:
    """The token, or only its surrounding punctuation when it is ID-like."""
    if not _id_like(token):
        return token
    core = token.strip(_PUNCT)
    start = token.find(core)
    return token[:start] + " " + token[start + len(core) :]


def _id_like(token: str) -> bool:
    core = token.strip(_PUNCT)
    if not core or core.isspace():
        return False
    digits = sum(ch.isdigit() for ch in core)
    letters = sum(ch.isalpha() for ch in core)
    if re.search(r"\d{5,}", core):
        return True
    return letters >= 1 and digits >= 3 and not _UNIT.fullmatch(core)


def _tidy(text: str) -> str:
    """Whitespace and separators left where something was cut, collapsed."""
    lines = []
    for line in text.splitlines():
        line = re.sub(r"[ \t]{2,}", " ", line)
        line = re.sub(r"[ \t]+([,;:.])", r"\1", line)
        line = re.sub(r"([,;:])(?:[ \t]*[,;:])+", r"\1", line)
        lines.append(line.strip(" \t,;:-/"))
    return "\n".join(line for line in lines if line)
