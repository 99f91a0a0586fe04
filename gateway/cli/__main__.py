"""``python -m gateway.cli``: the ``inlet`` command (gateway/cli/main.py)."""

import sys

from gateway.cli.main import main

sys.exit(main())
