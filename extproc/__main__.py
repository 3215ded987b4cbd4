"""`python -m extproc` is the `zerohop` command."""

import sys

from extproc.app.cli import main

sys.exit(main())
