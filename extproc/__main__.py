"""`python -m extproc` is the `zerohop` command."""

import sys

from extproc.cli import main

sys.exit(main())
