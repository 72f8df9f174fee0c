"""Conformance suites, one module per capability. Run with ``pytest conformance/suites``."""
