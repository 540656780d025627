"""``python -m custody`` runs the ``custody`` command."""

import sys

from custody.cli import main

sys.exit(main())
