"""Tests of the composite tier (marker `composite`, added by conftest.py)."""
