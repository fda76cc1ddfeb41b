"""Tests of the e2e tier (marker `e2e`, added by conftest.py)."""
