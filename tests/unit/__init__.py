"""Tests of the unit tier (marker `unit`, added by conftest.py)."""
