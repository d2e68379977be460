"""``python -m monitor``: the ``driftline`` command."""

import sys

from monitor.cli import main

sys.exit(main())
