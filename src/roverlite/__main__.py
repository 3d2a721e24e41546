"""``python -m roverlite`` runs the command line."""

import sys

from roverlite.cli import main

sys.exit(main())
