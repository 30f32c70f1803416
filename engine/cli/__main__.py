"""`python -m mediaengine.cli ...` is the `mediaengine` command."""

import sys

from .main import main

sys.exit(main())
