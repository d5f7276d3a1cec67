"""``python -m maild``: the same as the ``maild`` command."""

import sys

from maild.cli.main import main

sys.exit(main())
