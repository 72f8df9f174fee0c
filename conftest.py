"""Root pytest configuration. The conformance plugin registers here once the harness lands."""
