"""Standard attributes that PS3.15 Table E.1-1 does not list: their action by VR, and the two committed
lists the rule needs (the safe list of technical text attributes, and the UIDs that name kinds).

The table lists the attributes the committee judged identifying; the other ~4000 standard attributes
carry no action. For most (numbers, codes, binary data) keeping is right. Text is another matter: a
site can put anything in ContentDescription, PlacerOrderNumberProcedure or HL7InstanceIdentifier.
`unlisted_action` gives each such attribute an action code by its VR (the codes of ProfilePolicy):

* UI: K for the UIDs that name a kind of thing (KIND_UIDS: SOP classes, transfer syntaxes, coding
  schemes and other vocabulary), U (remapped) for every other UID; K for all under --retain_uids,
  since the table lists every UID that option is meant to remap.
* PN: D, a keyed dummy name, as for the table's names.
* DA, DT, TM: as the table's dates: D, K under --retain_long_full_dates, S (shifted; times kept) under
  --retain_long_modified_dates.
* Free text (LO, LT, SH, ST, UT, UC, AE, UR): T for the attributes of SAFE_TEXT (kept, with the
  instance's known identifying values cut); otherwise by --unlisted_text: C (clean, the default:
  deid/dicom/clean.py), K (keep verbatim) or X (remove). Inside a sequence the profile cleans (C),
  keep means clean too: the table asked for the sequence's content to be cleaned.
* CS (defined terms, not free text), AS, numbers, binary data, AT and sequences: K (the items of a
  sequence are then de-identified one attribute at a time).
* A public tag pydicom's dictionary does not know: X, since nothing says what it holds.

SAFE_TEXT is deliberately small and reviewed: attributes that name equipment, software and
acquisition technique, rendering explanations and code-sequence vocabulary, whose values routinely
hold letters with digits that the cleaner would cut (software versions, sequence names, kernels).
CodeMeaning is not on it: a code meaning is wording and is cleaned like other text.
"""

from __future__ import annotations

from pydicom.datadict import dictionary_has_tag, tag_for_keyword

from deid.settings import ProfileSettings

UNLISTED_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC", "AE", "UR"})

SAFE_TEXT_KEYWORDS: tuple[str, ...] = (
    # Equipment and software (General Equipment, SC Equipment, detector and coil makers).
    "Manufacturer", "ManufacturerModelName", "SoftwareVersions",
    "SecondaryCaptureDeviceManufacturer", "SecondaryCaptureDeviceManufacturerModelName",
    "SecondaryCaptureDeviceSoftwareVersions", "DetectorManufacturerName", "DetectorManufacturerModelName",
    # Acquisition and reconstruction technique.
    "SequenceName", "PulseSequenceName", "ConvolutionKernel", "ReceiveCoilName", "TransmitCoilName",
    "ImagedNucleus", "FilterType", "ContrastBolusRoute", "ReconstructionMethod", "AttenuationCorrectionMethod",
    "ScatterCorrectionMethod", "EnergyWindowName", "TransducerData", "ProcessingFunction", "PhosphorType",
    "PlateType", "PositionReferenceIndicator",
    # Rendering.
    "WindowCenterWidthExplanation", "RescaleType", "LUTExplanation", "ModalityLUTType",
    # Code Sequence Macro vocabulary (not CodeMeaning) and encapsulated document types.
    "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "LongCodeValue", "URNCodeValue",
    "MappingResourceName", "MIMETypeOfEncapsulatedDocument", "ListOfMIMETypes",
)

# UIDs not in Table E.1-1 that identify a kind (class, syntax, scheme, template), never an instance.
KIND_UID_KEYWORDS: tuple[str, ...] = (
    "AffectedSOPClassUID", "RequestedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID",
    "ImplementationClassUID", "RTVCommunicationSOPClassUID", "PrivateInformationCreatorUID",
    "ReferencedSOPClassUIDInFile", "ReferencedTransferSyntaxUIDInFile", "ReferencedRelatedGeneralSOPClassUIDInFile",
    "SOPClassUID", "RelatedGeneralSOPClassUID", "OriginalSpecializedSOPClassUID", "SOPClassesInStudy",
    "CodingSchemeUID", "ContextGroupExtensionCreatorUID", "ContextUID", "MappingResourceUID",
    "StoredInstanceTransferSyntaxUID", "ReferencedSOPClassUID", "SOPClassesSupported", "AvailableTransferSyntaxUID",
    "CreatorVersionUID", "FlowTransferSyntaxUID", "MACCalculationTransferSyntaxUID",
    "EncryptedContentTransferSyntaxUID", "SegmentationTemplateUID", "PertinentSOPClassesInStudy",
    "PertinentSOPClassesInSeries",
)


def _tags(keywords: tuple[str, ...]) -> frozenset[int]:
    tags = {tag_for_keyword(keyword) for keyword in keywords}
    if None in tags:
        raise RuntimeError("a committed keyword list names a keyword pydicom does not know")
    return frozenset(tag for tag in tags if tag is not None)


SAFE_TEXT = _tags(SAFE_TEXT_KEYWORDS)
KIND_UIDS = _tags(KIND_UID_KEYWORDS)


def unlisted_action(tag: int, vr: str, settings: ProfileSettings, in_clean: bool = False) -> str:
    """The action on standard attribute `tag` (of VR `vr`) that Table E.1-1 does not list; see above.

    `in_clean`: the element is in an item of a sequence the profile cleans.
    """
    if not dictionary_has_tag(tag):
        return "X"
    if vr == "UI":
        return "K" if tag in KIND_UIDS or settings.retain_uids else "U"
    if vr in ("DA", "DT", "TM"):
        if settings.retain_long_full_dates:
            return "K"
        return "S" if settings.retain_long_modified_dates else "D"
    if vr == "PN":
        return "D"
    if vr in UNLISTED_TEXT_VRS:
        if tag in SAFE_TEXT:
            return "T"
        mode = settings.unlisted_text
        if mode == "remove":
            return "X"
        return "K" if mode == "keep" and not in_clean else "C"
    return "K"
