"""Harvest the identifying values of inputs, to search the de-identified outputs for them.

Harvest (in the worker that reads the input; values never leave its memory):
- `harvest_dicom(ds, profile)`: text of every attribute the Basic Profile (with the run's options
  and --keep/--remove) removes, empties, replaces or dummies, at every depth, plus private text
  elements. Attributes the profile or the options keep (K) or clean (C), unlisted technical ones
  kept with known values cut (T), and `--keep` attributes, are not harvested: their values may
  legitimately stay. The action per attribute is the engine's own
  (deid.dicom.policy.ProfilePolicy.element_action, standard attributes Table E.1-1 does not list
  included), so the two cannot disagree. PN values add their
  components and re-orderings (deid.verify.values.name_variants); DA/DT values add other common
  date spellings.
- `harvest_path(path, root)`: the name and stem of the file (and of the folders below `root`), and
  their tokens that hold a capital letter or a digit; all-lowercase words ('truncated', 'notes')
  are descriptive and would collide with ordinary English in messages.
- `harvest_tiff_metadata(source)`, every IFD of a TIFF-based slide (deid/verify/vendors.py says
  which keys count and how each format is read):
  - ImageDescription (270) fields: Aperio SVS key=value (`Filename`, `Date`, `User`, `Barcode`,
    `ScanScope ID`...); Leica SCN XML (collection and image `name` and `uuid`, `barcode`,
    `creationDate`, device serial); Philips TIFF XML (`DICOM_PATIENT_*`, `PIM_DP_UFS_BARCODE`,
    `DICOM_DEVICE_SERIAL_NUMBER`, `DICOM_*DATE*`, `PIM_DP_SOURCE_FILE`...); any other XML by the
    local names of its attributes and leaf elements;
  - XMP (700) the same way: Ventana/Roche BIF `<iScan>` attributes (`UserName`, `CaseNumber`,
    `SlideAnnotation`, `BarCode1D`, `UnitNumber`, `ScanDate`...), Dublin Core creator and dates;
  - Hamamatsu NDPI text tags 65420-65458 (65427 reference, 65442 scanner serial, also on the macro
    IFD) whole, and the identifying key=value pieces of the 65449 property map (`;SerialNumber=`,
    `;Date=`...); 65448 (firmware version) is technical;
  - DocumentName, PageName, Artist (a person: with name variants), HostComputer, Copyright,
    UserComment, DateTime, DateTimeOriginal, DateTimeDigitized.
  Barcodes and IDs add their base64-decoded text (Philips and Leica encode barcodes) and UUIDs
  their form without 'urn:uuid:'; names add their variants; dates add other spellings.
- `harvest_slidedat(text)`: MIRAX Slidedat.ini, identifying keys of every section ([GENERAL]
  `SLIDE_ID`, `SLIDE_NAME`, `SLIDE_BARCODE`, `SLIDE_CREATIONDATETIME`, `PROJECT_NAME`...).
- `harvest_text(text, kind)`: lines and tokens of free text such as OCR output of a label.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from deid.dicom.elements import is_nameable
from deid.dicom.policy import ProfilePolicy, profile_policy
from deid.settings import ProfileSettings, is_glob
from deid.verify.tiffwalk import TiffParseError, iter_text_tags
from deid.verify.values import PhiValue, element_texts, meaningful_values
from deid.verify.values import name_variants as _pn_variants
from deid.verify.vendors import (
    NDPI_PROPERTY_MAP,
    NDPI_RANGE,
    NDPI_TECHNICAL,
    Field,
    id_spellings,
    ndpi_fields,
    slidedat_fields,
    text_fields,
)

_HARVEST_VRS = {"AE", "AS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR", "UI"}
_TEXT_TAG_KINDS = {269, 285, 315, 316, 33432, 37510}
_ARTIST = 315
_FIELD_TAGS = {270, 700}
# A field key shown in a value's kind: a plain identifier (a key is input text too).
_PLAIN_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,47}")
_DATE_TAGS = {306, 36867, 36868}
# A MIRAX Slidedat.ini is tens of kilobytes; more than this is not read.
MAX_SLIDEDAT_BYTES = 16 * 1024 * 1024


def _date_variants(da: str) -> list[str]:
    if not re.fullmatch(r"\d{8}", da):
        return [da]
    y, m, d = da[:4], da[4:6], da[6:]
    return [
        da,
        f"{y}-{m}-{d}",
        f"{y}/{m}/{d}",
        f"{y}:{m}:{d}",
        f"{m}/{d}/{y}",
        f"{d}/{m}/{y}",
        f"{d}.{m}.{y}",
        f"{d}-{m}-{y}",
        f"{m}/{d}/{y[2:]}",
    ]


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
    for key, elem in list(ds._dict.items()):  # this level (`for elem in ds` less its sort); sequences below
        if elem.is_raw:
            elem = ds[key]
        tag = int(key)
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
        # The engine's own rule, standard attributes the table does not list included (a SOP class only
        # picks between removing codes, never K, C or T). T: kept with known values cut.
        if policy.element_action(tag, vr, nested=depth > 0) in ("K", "C", "T"):
            continue  # kept or cleaned values may stay
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
        # A tag outside the dictionary may be input text read as a header: it is not named (is_nameable).
        keyword = elem.keyword or (f"({tag >> 16:04X},{tag & 0xFFFF:04X})" if is_nameable(tag) else "unlisted element")
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


def harvest_tiff_metadata(source: str | Path | bytes | BinaryIO, strict: bool = False) -> frozenset[PhiValue]:
    """PHI-keyed description fields and identifying text tags of every IFD of a TIFF-based slide.

    A file that cannot be walked yields nothing, or with `strict` (the verify command, which must not
    vouch for an input it could not read) raises TiffParseError / OSError.
    """
    found: set[PhiValue] = set()
    try:
        tags = list(iter_text_tags(source))
    except (TiffParseError, OSError, ValueError):
        if strict:
            raise
        return frozenset()
    for item in tags:
        text = _decode(item.data)
        if item.tag in _FIELD_TAGS or item.tag == NDPI_PROPERTY_MAP:
            fields = ndpi_fields(text) if item.tag == NDPI_PROPERTY_MAP else text_fields(text)
            for field in fields:
                found |= field_values(field, f"tiff:{item.name}")
        elif item.tag in _TEXT_TAG_KINDS:
            texts = _pn_variants(text.strip()) if item.tag == _ARTIST else [text]
            found |= meaningful_values(texts, f"tiff:{item.name}")
        elif item.tag in NDPI_RANGE and item.tag not in NDPI_TECHNICAL and text.strip().isprintable():
            found |= meaningful_values(id_spellings(text.strip()), f"tiff:{item.name}")
        elif item.tag in _DATE_TAGS:
            found |= meaningful_values(_date_texts(text), f"tiff:{item.name}")
    return _keys_without_values(found)


def harvest_slidedat(text: str | bytes) -> frozenset[PhiValue]:
    """Identifying values of a MIRAX Slidedat.ini (its text, or its bytes in UTF-8, UTF-16 or Latin-1)."""
    if isinstance(text, bytes):
        text = _decode_ini(text)
    found: set[PhiValue] = set()
    for field in slidedat_fields(text):
        found |= field_values(field, "mirax:Slidedat")
    return _keys_without_values(found)


def is_slidedat(path: str) -> bool:
    """A MIRAX slide's Slidedat.ini, by its name (any case), local or remote."""
    return PurePosixPath(path.replace("\\", "/")).name.casefold() == "slidedat.ini"


def field_values(field: Field, prefix: str) -> set[PhiValue]:
    """A vendor field's value in the spellings its sort calls for, of kind '<prefix>:<key>'."""
    if field.sort == "name":
        texts = _pn_variants(field.value)
    elif field.sort == "date":
        texts = _date_texts(field.value)
    elif field.sort == "id":
        texts = id_spellings(field.value)
    else:
        texts = [field.value]
    key = field.key.rsplit(":", 1)[-1]
    key = key if _PLAIN_KEY.fullmatch(key) else field.sort
    return meaningful_values(texts, f"{prefix}:{key}")


def _keys_without_values(found: set[PhiValue]) -> frozenset[PhiValue]:
    """Kinds name field keys, and a key is input text: one that holds a harvested value is not shown."""
    folded = [v.text.casefold() for v in found]
    out = set()
    for value in found:
        kind = value.kind.casefold()
        if any(text in kind for text in folded):
            value = PhiValue(value.text, value.kind.rsplit(":", 1)[0] + ":field")
        out.add(value)
    return frozenset(out)


def _decode_ini(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _decode(data: bytes) -> str:
    data = data.rstrip(b"\x00")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _date_texts(value: str) -> list[str]:
    """A date as written, plus the DICOM DA form and its variants when it can be recognised.

    Recognised: year first ('2023-09-11', '2023:09:11 10:15', '2023-09-11T10:15:00Z'), month or
    day first with '/' ('09/11/23', MIRAX's '11/09/2023 10:15:00': both readings that are dates),
    day first with '.', and DA/DT digits ('20230911', '20230911101500.000000').
    """
    out = [value.strip()]
    match = re.search(r"(\d{4})[:/\-.](\d{1,2})[:/\-.](\d{1,2})", value)
    if match:
        y, m, d = match.groups()
        out += _date_of(y, m, d)
    match = re.search(r"(?<!\d)(\d{1,2})/(\d{1,2})/(\d{2,4})(?!\d)", value)
    if match:
        first, second, y = match.groups()
        year = y if len(y) == 4 else ("20" + y if int(y) < 70 else "19" + y)
        out += _date_of(year, first, second) + _date_of(year, second, first)
    match = re.search(r"(?<!\d)(\d{1,2})\.(\d{1,2})\.(\d{4})(?!\d)", value)
    if match:
        d, m, y = match.groups()
        out += _date_of(y, m, d)
    match = re.match(r"\s*(\d{8})(?:\d{6}(?:\.\d+)?)?(?:[+-]\d{4})?\s*$", value) or re.search(r"\b(\d{8})\b", value)
    if match:
        out += _date_variants(match.group(1))
    return out


def _date_of(y: str, m: str, d: str) -> list[str]:
    if not (1 <= int(m) <= 12 and 1 <= int(d) <= 31):
        return []
    return _date_variants(f"{y}{int(m):02d}{int(d):02d}")
