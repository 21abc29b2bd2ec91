#!/usr/bin/env bash
# Set up, then open napari with the OV-SAM annotator on the bundled sample stack and the demo model.
# Without a display, runs the same segment-and-name job on the command line instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The Qt binding the qt extra installs (an older checkout's .venv may also hold PyQt5, which qtpy would pick).
export QT_API="${QT_API:-pyqt6}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || [ "$(uname)" = "Darwin" ]; then
    exec .venv/bin/python -m napari_ovsam.launch "$@"
fi
echo "No display found: running the command-line segment-and-name job on the sample instead."
exec .venv/bin/python -m ovsam_model.demo "$@"
