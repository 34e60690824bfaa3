"""`python -m smscool`: the `smscool` command."""

import sys

from smscool.cli import main

sys.exit(main())
