import sys

from hami_stack.monitor.server import main

sys.exit(main())
