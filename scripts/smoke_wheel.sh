#!/usr/bin/env bash
# Check what `pip install napari-ovsam` gives, without the source tree: build the wheel, install it alone into a
# fresh virtual environment that borrows ./.venv's dependencies (no second download), and there run the demo,
# `npe2 validate`, every manifest command and the widget on one box (scripts/smoke_wheel.py says how).
# Needs ./.venv (scripts/setup.sh); the widget needs a display, so without one it runs under Xvfb.
set -euo pipefail
cd "$(dirname "$0")/.."
export QT_API="${QT_API:-pyqt6}"
export HF_HUB_OFFLINE=1
if [ -n "${DISPLAY:-}" ]; then
    exec .venv/bin/python scripts/smoke_wheel.py "$@"
fi
exec xvfb-run -a .venv/bin/python scripts/smoke_wheel.py "$@"
