"""The test suite, one folder per tier (unit, dofn, composite, e2e, deploy); helpers in tests.support."""
