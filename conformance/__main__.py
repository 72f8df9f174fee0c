"""``python -m conformance`` = ``hami-conformance``."""

import sys

from conformance.cli import main

sys.exit(main())
