"""``python -m ovsam_model.annotate``: see :mod:`ovsam_model.annotate.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
