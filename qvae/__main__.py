"""`python -m qvae` runs the command line."""

import sys

from qvae.cli import main

sys.exit(main())
