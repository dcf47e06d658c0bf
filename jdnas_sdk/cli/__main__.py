"""``python -m jdnas_sdk.cli``: the ``jdnas`` command."""

import sys

from . import main

sys.exit(main())
