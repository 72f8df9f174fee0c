"""``python -m conformance.probe``: print one JSON document describing what the container sees."""

from __future__ import annotations

import sys

from conformance.probe.cli import main

if __name__ == "__main__":
    sys.exit(main())
