"""`python -m tuning` runs the tuning command line."""

import sys

from tuning.cli import main

sys.exit(main())
