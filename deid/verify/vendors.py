"""Identifying fields of vendor slide metadata: which keys of which format hold names, IDs, dates.

Pure text parsing with regular expressions: no XML or INI parser, so a truncated or hostile
description still yields what it holds, and no entity is expanded or fetched. Sources:
- key=value descriptions, '|'- or line-separated (Aperio SVS: Filename, Date, User, Barcode...);
- XML and XMP, every attribute and every leaf element by its local name (Leica SCN
  ImageDescription: collection/image name and uuid, barcode, creationDate, device serial; Ventana
  and Roche BIF XMP `<iScan>` attributes: UserName, CaseNumber, SlideAnnotation, BarCode1D,
  UnitNumber, ScanDate...; Philips TIFF ImageDescription `<Attribute Name="...">value</Attribute>`:
  DICOM_PATIENT_*, PIM_DP_UFS_BARCODE, DICOM_DEVICE_SERIAL_NUMBER, dates...);
- the Hamamatsu NDPI property map (tag 65449): ';'- or line-separated key=value pieces
  (SerialNumber=, Date=...); the NDPI text tags themselves are listed in NDPI_TEXT_TAGS;
- MIRAX Slidedat.ini: key = value lines of every section ([GENERAL] SLIDE_ID, SLIDE_NAME,
  SLIDE_BARCODE, SLIDE_CREATIONDATETIME, PROJECT_NAME...).

Whether a key is identifying is `field_sort(key)`, on the key's letters and digits only, lower case
(so 'BarCode1D', 'PIM_DP_UFS_BARCODE' and 'barcode' are one key): None for technical keys (not
harvested), 'name' for a person (harvested with deid.verify.values.name_variants; a bare 'name'
names any object and is 'text'), 'date' (with other date spellings), 'id' (barcodes, serials,
UUIDs: also their base64-decoded text and the UUID without 'urn:uuid:'), 'text' for other
identifying free text (slide and project names, annotations, host and institution names).
"""

from __future__ import annotations

import base64
import binascii
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass

# Keys that would match below but describe software or hardware versions, not a slide or a person.
_TECHNICAL = re.compile(r"build|version|firmware|software|boundary|format|^show|^roi|obscured")
_NAME = re.compile(
    r"patientname|personname|physician|doctor|surgeon|operator|user|author|artist|creator|owner|"
    r"technician|technologist|pathologist"
)
_DATE = re.compile(r"date|birth")
_ID = re.compile(
    r"barcode|uuid|guid|serial|slideid|unitnumber|accession|mrn|casenumber|caseid|specimen|scanscopeid|"
    r"reference|patientid|studyid|^identifier$"
)
_TEXT = re.compile(
    r"filename|sourcefile|label|annotation|title|institution|hospital|station|case|patient|slidename|"
    r"project|address|phone|email|comment|computername|hostname|hostcomputer|^name$"
)
# NDPI tags with text values (tifffile's names): 65427 SlideLabel (OpenSlide's hamamatsu.Reference)
# and 65442 ScannerSerialNumber identify the slide and the scanner; 65449 is the key=value property
# map (see ndpi_fields); 65448 FirmwareVersion is technical.
NDPI_TEXT_TAGS = {65427: "id", 65428: "id", 65442: "id"}
NDPI_PROPERTY_MAP = 65449
NDPI_RANGE = range(65420, 65459)
NDPI_TECHNICAL = frozenset({65448})

_START_TAG = re.compile(r"<([A-Za-z_][\w:.\-]*)((?:\s+[^<>]*?)?)\s*/?>([^<]*)", re.DOTALL)
_ATTRIBUTE = re.compile(r"([A-Za-z_][\w:.\-]*)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')", re.DOTALL)
_LEAF = re.compile(r"<([A-Za-z_][\w:.\-]*)(?:\s[^<>]*)?>([^<]+)</\1\s*>", re.DOTALL)
_B64 = re.compile(r"[A-Za-z0-9+/]{6,}={0,2}")


@dataclass(frozen=True)
class Field:
    """One identifying field: its key as written, its value (unescaped), and its sort."""

    key: str
    value: str
    sort: str

    def __repr__(self) -> str:  # never show the value
        return f"Field(key={self.key!r}, sort={self.sort!r}, len={len(self.value)})"


def field_sort(key: str) -> str | None:
    """'name', 'date', 'id', 'text', or None when values of `key` are not identifying."""
    flat = re.sub(r"[^a-z0-9]", "", key.casefold().rsplit(":", 1)[-1])
    if not flat or _TECHNICAL.search(flat):
        return None
    for sort, pattern in (("name", _NAME), ("date", _DATE), ("id", _ID), ("text", _TEXT)):
        if pattern.search(flat):
            return sort
    return None


def _field(key: str, value: str) -> Field | None:
    sort = field_sort(key)
    value = html.unescape(value).strip()
    if sort is None or not value:
        return None
    return Field(key, value, sort)


def text_fields(text: str, separators: str = "|\r\n") -> Iterator[Field]:
    """Identifying fields of a description or XMP packet: XML when it starts as XML, else key=value
    segments (and any XML inside them)."""
    if not text.lstrip("\ufeff \t\r\n").startswith("<"):
        yield from key_value_fields(text, separators)
    if "<" in text:
        yield from xml_fields(text)


def key_value_fields(text: str, separators: str = "|\r\n") -> Iterator[Field]:
    """'key = value' segments between `separators` (segments holding XML are left to xml_fields)."""
    for segment in re.split(f"[{re.escape(separators)}]+", text):
        if "=" not in segment or "<" in segment:
            continue
        key, _, value = segment.partition("=")
        found = _field(key.strip(), value.strip().strip('"'))
        if found:
            yield found


def xml_fields(text: str) -> Iterator[Field]:
    """Attributes and leaf elements of XML with an identifying local name.

    Philips `<Attribute Name="KEY" ...>value</Attribute>` gives KEY and the value (each item of a
    quoted array); its Name, Group, Element and PMSVR attributes are structure, not values.
    """
    for match in _START_TAG.finditer(text):
        tag, attributes, following = match.groups()
        local = tag.rsplit(":", 1)[-1]
        pairs = {m.group(1): _first(m.group(2), m.group(3)) for m in _ATTRIBUTE.finditer(attributes)}
        if local == "Attribute" and "Name" in pairs:
            for item in _philips_items(following):
                found = _field(pairs["Name"], item)
                if found:
                    yield found
            continue
        for key, value in pairs.items():
            if key == "xmlns" or key.startswith("xmlns:"):
                continue
            found = _field(key, value)
            if found:
                yield found
    for match in _LEAF.finditer(text):
        tag, value = match.groups()
        if tag.rsplit(":", 1)[-1] != "Attribute":
            found = _field(tag, value)
            if found:
                yield found


def _first(double_quoted: str | None, single_quoted: str | None) -> str:
    return double_quoted if double_quoted is not None else single_quoted or ""


def _philips_items(value: str) -> list[str]:
    value = value.strip()
    quoted = re.findall(r'"([^"]*)"', value)
    return quoted if quoted else [value]


def ndpi_fields(text: str) -> Iterator[Field]:
    """The identifying key=value pieces of an NDPI property map (tag 65449): ';' or line separated."""
    yield from key_value_fields(text, "|;\r\n")


def slidedat_fields(text: str) -> Iterator[Field]:
    """Identifying 'KEY = value' lines of a MIRAX Slidedat.ini, keyed 'SECTION.KEY'."""
    section = ""
    for raw in text.lstrip("\ufeff").splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if "=" not in line or line.startswith((";", "#")):
            continue
        key, _, value = line.partition("=")
        found = _field(key.strip(), value.strip().strip('"'))
        if found:
            yield Field(f"{section}.{found.key}" if section else found.key, found.value, found.sort)


def id_spellings(value: str) -> list[str]:
    """An ID as written, without a 'urn:uuid:' prefix, and its base64-decoded text when printable."""
    out = [value]
    if value.lower().startswith("urn:uuid:"):
        out.append(value[9:])
    if _B64.fullmatch(value) and len(value) % 4 == 0:
        try:
            decoded = base64.b64decode(value, validate=True).decode("ascii")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        if decoded.strip() and decoded.isprintable():
            out.append(decoded.strip())
    return out
