"""Example model artifacts that can be built offline from packages on PyPI."""
