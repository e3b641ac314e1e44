"""Entry point of `python -m bench`: everything happens in bench._main.main.

This module only hands over the exit status.
"""

from bench._main import main

raise SystemExit(main())
