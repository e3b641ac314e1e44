"""Entry point of `python -m companion`, the process Lambda starts as the extension.

Everything happens in companion._main.main; this module only hands over the exit status.
"""

from companion._main import main

raise SystemExit(main())
