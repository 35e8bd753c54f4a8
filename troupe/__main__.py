"""``python -m troupe`` is the ``troupe`` command."""

import sys

from .cli import main

sys.exit(main())
