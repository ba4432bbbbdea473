"""``python -m e2ee``: the same as the ``e2ee`` command."""

import sys

from e2ee.tools.cli import main

sys.exit(main())
