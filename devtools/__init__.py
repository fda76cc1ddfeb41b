"""Development-only tools: local stand-ins used by tests and demos.

Not part of the shipped package: setup.py's find_packages include list names only pipeline,
transforms and deid, the Dockerfile copies only those, and tests/unit/test_layering.py checks that no
product module imports devtools.
"""
