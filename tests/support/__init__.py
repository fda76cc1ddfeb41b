"""Test support, imported as `tests.support.<module>`: factories of synthetic inputs (DICOM, slides,
text images, fake PHI), local emulators (GCS, the fake Healthcare API, Orthanc) and shared constants.
It holds no tests."""
