"""Pure de-identification domain code.

Nothing in this package imports Apache Beam (tests/unit/test_layering.py enforces it): profiles, keyed
pseudonyms, classification, redaction, tile geometry and writers are plain functions and frozen
dataclasses that the Beam layer (`transforms/`) calls.
"""
