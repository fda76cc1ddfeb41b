"""Tests of the dofn tier (marker `dofn`, added by conftest.py)."""
