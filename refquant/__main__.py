"""``python -m refquant``: the ``refquant`` command (see :mod:`refquant.cli`)."""

import sys

from .cli import main

sys.exit(main())
