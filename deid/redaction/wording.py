"""Which recognised words may stay in an image: the PHI-first classification of `--redact_text ocr`.

A word read by tesseract is, in this order:
- identifying when it matches a harvested header value (ocr.TermMatcher) or a PHI pattern (dates
  in any common format, times of day, long digit runs, accession-like codes, 'Name:', 'DOB'...);
- plain clinical or technical wording when it is on CLINICAL_WORDS (anatomy, views, patient
  positions, modalities, acquisition parameters and units), a single letter (orientation markers
  L, R, A, P, H, F), or a short number with or without a unit ('120kV', '50mm/s', '1.5', '96');
- unclassified otherwise: a surname, a place, a word misread by OCR.
A box is redacted unless every word in it may stay, so what cannot be classified is redacted.
"""

from __future__ import annotations

import re

CLINICAL_WORDS = frozenset(
    """
    abdomen abdominal adrenal ankle aorta aortic apex appendix arm arterial artery atrium axial axilla
    back base bladder bone bowel brain breast bronchus calf cardiac carotid cerebellum cervical chest
    clavicle colon coronary cortex cranial cranium duodenum ear elbow esophagus eye face femur fibula
    finger foot forearm gallbladder hand head heart heel hepatic hip humerus ileum iliac jaw jejunum
    joint jugular kidney knee larynx leg lens lip liver lobe lumbar lung mandible mediastinum
    mitral muscle nasal neck nerve node orbit ovary pancreas patella pelvis pelvic penis pleura
    portal prostate pulmonary radius rectum renal retina rib ribs sacrum scapula scrotum shoulder
    sinus skull spine spinal spleen sternum stomach tendon testis thigh thoracic thorax thumb
    thyroid tibia toe tongue trachea ulna ureter urethra uterus vagina valve vein venous ventricle
    vertebra vessel wrist
    ap pa lat lateral oblique axial sagittal coronal transverse trans long short axis view left right
    lt rt bilateral mid upper lower anterior posterior superior inferior medial distal proximal
    supine prone erect upright semi standing sitting decubitus portable recumbent
    ct mr mri us cr dx mg xa rf pet spect nm ot sc scout localizer topogram surview
    kv kvp ma mas ms mm cm hz khz mhz db fps hr bpm rr gain depth freq frq zoom mi tis tib tic pwr
    power dr dyn map persist res comp wall filter prf angle sv cfm pw cw color colour doppler mode
    ww wl wc window level slice thk thickness fov matrix tilt sec scan series image im img se frame
    contrast non with without pre post delayed arterial venous phase early late cine loop
    research use only not for diagnostic diagnosis test phantom quality qc calibration
    mag magnification ref reference scale marker cal
    """.split()  # noqa: SIM905 - a word list reads better as prose
)
_UNIT = r"(?:kv|kvp|ma|mas|ms|s|mm|cm|m|hz|khz|mhz|db|fps|bpm|%|x|mm/s|cm/s|deg)"
_SAFE_NUMBER = re.compile(rf"^[+\-]?\d{{1,3}}(?:[.,]\d{{1,2}})?{_UNIT}?$", re.IGNORECASE)
_UNIT_ONLY = re.compile(rf"^{_UNIT}$", re.IGNORECASE)
_TIME = re.compile(r"\d{1,2}:\d{2}")


def may_stay(word: str) -> bool:
    """Whether one recognised word is plain clinical or technical wording (see the module docstring)."""
    text = word.strip().strip(".,;:()[]{}'\"").casefold()
    if not text:
        return True  # punctuation only
    if _TIME.search(text):
        return False
    if len(text) == 1 and text.isalpha():
        return True
    if _SAFE_NUMBER.match(text) or _UNIT_ONLY.match(text):
        return True
    parts = [p for p in re.split(r"[\-/+]", text) if p]
    return bool(parts) and all(p in CLINICAL_WORDS or _SAFE_NUMBER.match(p) for p in parts)
