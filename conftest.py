"""Root pytest configuration: the conformance plugin (inert unless its suites are selected)."""

pytest_plugins = ["conformance.plugin"]
