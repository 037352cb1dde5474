"""``python -m pykbroker`` runs the command line."""

import sys

from pykbroker.cli import main

sys.exit(main())
