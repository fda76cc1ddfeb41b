"""Harvest the identifying values of inputs, to search the de-identified outputs for them.

Harvest (in the worker that reads the input; values never leave its memory):
- `harvest_dicom(ds, profile)`: text of every attribute the Basic Profile (with the run's options
  and --keep/--remove) removes, empties, replaces or dummies, at every depth, plus private text
  elements. Attributes the profile or the options keep (K) or clean (C), and `--keep` attributes,
  are not harvested: their values may legitimately stay. The action per attribute is the engine's
  own (deid.dicom.policy.ProfilePolicy.action_for), so the two cannot disagree. PN values add their
  components and common re-orderings; DA/DT values add other common date spellings.
- `harvest_path(path, root)`: the name and stem of the file (and of the folders below `root`), and
  their tokens that hold a capital letter or a digit; all-lowercase words ('truncated', 'notes')
  are descriptive and would collide with ordinary English in messages.
- `harvest_tiff_metadata(source)`: PHI-keyed fields of slide descriptions (Aperio `Filename`,
  `Date`, `User`, `Barcode`...; Philips `DICOM_PATIENT_*`...), and DocumentName, PageName, Artist,
  HostComputer, Copyright, UserComment, DateTime of every IFD.
- `harvest_text(text, kind)`: lines and tokens of free text such as OCR output of a label.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from deid.dicom.policy import ProfilePolicy, profile_policy
from deid.settings import ProfileSettings, is_glob
from deid.verify.tiffwalk import TiffParseError, iter_text_tags
from deid.verify.values import PhiValue, element_texts, meaningful_values

_HARVEST_VRS = {"AE", "AS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR", "UI"}
# Slide description fields that identify a patient, a person, a case or a date.
_PHI_KEY = re.compile(
    r"(file ?name|filename|^date$|date ?time|scan ?date|user|operator|barcode|patient|accession|"
    r"case|specimen|label|physician|doctor|surgeon|^name$|birth|mrn|title|institution|hospital)",
    re.IGNORECASE,
)
_TEXT_TAG_KINDS = {269, 285, 315, 316, 33432, 37510, 65427}
_DATE_TAGS = {306, 36867, 36868}


def _date_variants(da: str) -> list[str]:
    if not re.fullmatch(r"\d{8}", da):
        return [da]
    y, m, d = da[:4], da[4:6], da[6:]
    return [da, f"{y}-{m}-{d}", f"{y}/{m}/{d}", f"{y}:{m}:{d}", f"{m}/{d}/{y}", f"{d}.{m}.{y}", f"{m}/{d}/{y[2:]}"]


def _pn_variants(pn: str) -> list[str]:
    out = [pn]
    for group in pn.split("="):
        parts = [p.strip() for p in group.split("^") if p.strip()]
        out.extend(parts)
        if len(parts) >= 2:
            family, given = parts[0], parts[1]
            out += [
                " ".join(parts),
                f"{given} {family}",
                f"{family}, {given}",
                f"{family},{given}",
                f"{family}_{given}",
                f"{given}_{family}",
                f"{given}^{family}",
            ]
    return out


def harvest_dicom(ds: Any, profile: ProfileSettings | None = None) -> frozenset[PhiValue]:
    """Identifying values of a pydicom Dataset (file meta included), at every depth.

    `profile`: the run's ProfileSettings, so that values the options retain are not expected gone.
    Raises ProfileError when its --keep/--remove lists name nothing, as deidentify() would.
    """
    policy = profile_policy(profile or ProfileSettings())
    found: set[PhiValue] = set()
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        _harvest_dataset(meta, policy, found, depth=0)
    _harvest_dataset(ds, policy, found, depth=0)
    return frozenset(found)


def harvest_private_texts(texts: Iterable[str]) -> frozenset[PhiValue]:
    """Values of private elements that were removed unparsed (deid.dicom.reader.read_for_profile)."""
    return frozenset(meaningful_values(texts, "private"))


def _harvest_dataset(ds: Any, policy: ProfilePolicy, found: set[PhiValue], depth: int) -> None:
    if depth > 64:
        return
    for elem in ds:  # this level; sequences recurse below
        tag = int(elem.tag)
        vr = elem.VR
        private = bool((tag >> 16) & 1)
        if not private and vr != "SQ" and vr not in _HARVEST_VRS:
            continue  # numbers, codes, binary: the cheap test first, most elements stop here
        if vr == "SQ":
            # Even in a kept sequence the engine de-identifies the items one attribute at a time.
            for item in elem.value or ():
                _harvest_dataset(item, policy, found, depth + 1)
            continue
        if private:
            # Private creator strings name a vendor, not a person. Under Retain Safe Private the
            # table's action for private elements is C: some values may legitimately stay.
            if (tag & 0xFFFF) < 0x0100 or policy.settings.retain_safe_private:
                continue
            found |= meaningful_values(element_texts(elem), "private")
            continue
        if policy.action_for(tag) in (None, "K", "C"):
            continue  # kept or cleaned values may stay; unlisted ones are the engine's call by context
        texts = element_texts(elem)
        if elem.VR == "UI":
            texts = [t for t in texts if not t.startswith("1.2.840.10008.")]
        expanded: list[str] = []
        for text in texts:
            if elem.VR == "PN":
                expanded += _pn_variants(text)
            elif elem.VR == "DA":
                expanded += _date_variants(text)
            elif elem.VR == "DT":
                expanded += [text, *_date_variants(text[:8])]
            else:
                expanded.append(text)
        keyword = elem.keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        found |= meaningful_values(expanded, keyword)


def harvest_path(path: str, root: str | None = None) -> frozenset[PhiValue]:
    """Meaningful components of an input's path: below `root` if given, else the file name only."""
    posix = path.replace("\\", "/")
    parts: list[str]
    if root:
        base = root.replace("\\", "/").rstrip("/")
        rel = posix[len(base) :].lstrip("/") if posix.startswith(base + "/") else PurePosixPath(posix).name
        parts = [p for p in rel.split("/") if p and not is_glob(p)]
    else:
        parts = [PurePosixPath(posix).name]
    texts: list[str] = []
    for part in parts:
        stem = part
        while "." in stem and len(stem.rsplit(".", 1)[1]) <= 5:
            stem = stem.rsplit(".", 1)[0]
        tokens = [t for t in re.split(r"[\s_.\-+,;()\[\]{}]+", stem) if t and t != stem]
        # All-lowercase words in names are descriptive ('truncated', 'notes', 'chest') and collide
        # with ordinary English in outputs; identifying tokens carry a capital or a digit. The rule
        # holds for a one-word stem ('misc/truncated.dcm') as for the tokens of a longer one.
        texts += [t for t in [part, stem, *tokens] if not _descriptive_word(t)]
    return frozenset(meaningful_values(texts, "path"))


def _descriptive_word(token: str) -> bool:
    return (token.isalpha() and token.islower()) or (token.isdigit() and len(token) < 4)


def harvest_text(text: str, kind: str = "ocr") -> frozenset[PhiValue]:
    """Lines and word tokens of free text (OCR of a label or macro image)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    tokens = [t for line in lines for t in re.split(r"[\s,;:|]+", line)]
    tokens = [t.strip(".'\"()[]{}") for t in tokens]
    return frozenset(meaningful_values(lines + tokens, kind))


def harvest_tiff_metadata(source: str | Path | bytes | BinaryIO) -> frozenset[PhiValue]:
    """PHI-keyed description fields and identifying text tags of every IFD of a TIFF-based slide."""
    found: set[PhiValue] = set()
    try:
        tags = list(iter_text_tags(source))
    except (TiffParseError, OSError, ValueError):
        return frozenset()
    for item in tags:
        text = _decode(item.data)
        if item.tag == 270:
            for key, value in _description_fields(text):
                kind = f"tiff:ImageDescription:{key}"
                if re.search(r"date", key, re.IGNORECASE):
                    found |= meaningful_values(_date_texts(value), kind)
                else:
                    found |= meaningful_values([value], kind)
        elif item.tag in _TEXT_TAG_KINDS:
            found |= meaningful_values([text], f"tiff:{item.name}")
        elif item.tag in _DATE_TAGS:
            found |= meaningful_values(_date_texts(text), f"tiff:{item.name}")
    return frozenset(found)


def _decode(data: bytes) -> str:
    data = data.rstrip(b"\x00")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _date_texts(value: str) -> list[str]:
    """A date as written, plus the DICOM DA form and its variants when it can be recognised."""
    out = [value.strip()]
    match = re.search(r"(\d{4})[:/\-.](\d{1,2})[:/\-.](\d{1,2})", value)
    if match:
        y, m, d = match.groups()
        out += _date_variants(f"{y}{int(m):02d}{int(d):02d}")
    match = re.search(r"\b(\d{1,2})/(\d{1,2})/(\d{2,4})\b", value)
    if match:
        m, d, y = match.groups()
        year = y if len(y) == 4 else ("20" + y if int(y) < 70 else "19" + y)
        out += _date_variants(f"{year}{int(m):02d}{int(d):02d}")
    match = re.search(r"\b(\d{8})\b", value)
    if match:
        out += _date_variants(match.group(1))
    return out


def _description_fields(text: str) -> Iterator[tuple[str, str]]:
    """(key, value) pairs of PHI-keyed fields in Aperio, key=value and Philips/XML descriptions."""
    for segment in re.split(r"[|\r\n]+", text):
        if "=" in segment and "<" not in segment:
            key, _, value = segment.partition("=")
            key = key.strip()
            if key and _PHI_KEY.search(key):
                yield key, value.strip()
    # Philips TIFF: <Attribute Name="DICOM_PATIENT_NAME" ...>value</Attribute>
    for match in re.finditer(r'Name="([A-Za-z0-9_]+)"[^>]*>([^<]*)<', text):
        key, value = match.groups()
        if _PHI_KEY.search(key.replace("_", " ")) or "DATE" in key.upper():
            yield key, value.strip().strip('"')
    # Generic XML elements: <PatientName>value</PatientName>
    for match in re.finditer(r"<([A-Za-z][\w:.-]*)[^>]*>([^<]+)</\1>", text):
        key, value = match.groups()
        if _PHI_KEY.search(key.split(":")[-1]):
            yield key, value.strip()
