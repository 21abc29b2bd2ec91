"""``python -m ovsam_model.evaluate``: OV-SAM and the SAM + CLIP baselines on COCO/LVIS-format data.

The command line lives in :mod:`ovsam_model.evaluation.cli` (``--help`` lists the protocols and flags), the
runner in :mod:`ovsam_model.evaluation.runner` and the markdown report in :mod:`ovsam_model.evaluation.report`.
"""

from __future__ import annotations

from .evaluation.cli import build_parser, main, parse_args
from .evaluation.report import markdown_report
from .evaluation.runner import load_data

__all__ = ["build_parser", "load_data", "main", "markdown_report", "parse_args"]

if __name__ == "__main__":
    raise SystemExit(main())
