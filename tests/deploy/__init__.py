"""Tests of the deploy tier (marker `deploy`, added by conftest.py)."""
