"""``python -m ovsam_model.serve``: see :mod:`ovsam_model.serve.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
