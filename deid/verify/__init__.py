"""Proof that outputs carry no identifying value of their inputs.

`harvest` collects identifying values from inputs (DICOM attributes, private text, slide metadata,
OCR text, path components), `scan` searches de-identified outputs for them, and `values` says which
values count and how a hit is reported without the value (and the one place name spellings are
made). `vendors` says which fields of vendor slide metadata identify; `retained` drops the values
that sit inside UIDs the run keeps (a date in a UID kept by --retain_uids). `pixels` re-reads redacted
regions with OCR. `tiffwalk` lists every text-bearing tag of every IFD of a TIFF without decoding
pixels. Nothing here imports Beam; the values never leave the calling worker's memory.
"""
