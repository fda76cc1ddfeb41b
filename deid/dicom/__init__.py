"""DICOM: strict reading, the PS3.15 profile engine, writing, pixel redaction.

pydicom quotes element values in its warnings and log lines (invalid values, charset problems); they
would carry PHI into worker logs. Silencing them here, in the package, holds for whichever of its
modules a caller imports first.
"""

from __future__ import annotations

import logging
import warnings

import pydicom

warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
_PYDICOM_LOGGER = logging.getLogger("pydicom")
_PYDICOM_LOGGER.setLevel(logging.CRITICAL + 1)
_PYDICOM_LOGGER.propagate = False
# Value validation (VR length and character rules) only ever warns in pydicom's default mode, and those
# warnings are silenced above, so it costs time for nothing; structural damage is still refused by
# check_structure() and the full parse in deid.dicom.reader.read_dicom().
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
