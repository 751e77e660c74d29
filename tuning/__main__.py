"""`python -m tuning` runs the tuning command line."""

import sys

from .cli import main

sys.exit(main())
