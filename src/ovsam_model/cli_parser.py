"""The argument parser every command line of this package uses: an error is one line, exit status 2.

``argparse``'s own ``error()`` prints the whole usage block before the message; a scientist running a batch job
wants the one line that says what is wrong and how to fix it (``--help`` still shows the usage).
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

EXIT_USAGE = 2


def fail(prog: str, message: str) -> NoReturn:
    """Print ``prog: error: message`` as one line on stderr (white space folded) and exit with status 2."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors (its own and those raised through ``error()``) are one line."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, message)
