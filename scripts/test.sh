#!/usr/bin/env bash
# Set up, then lint (ruff), type-check (mypy) and run the whole test suite (GUI tests under Xvfb); without
# arguments, then the wheel smoke test (scripts/smoke_wheel.sh). Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v xvfb-run >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # napari's canvas needs OpenGL on an X display; offscreen Qt has none.
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xauth libxkbcommon-x11-0 libxcb-icccm4 \
        libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 \
        libxcb-shape0 libxcb-cursor0 libegl1 libdbus-1-3 >/dev/null
fi
bash scripts/setup.sh
# The Qt binding the qt extra installs (an older checkout's .venv may also hold PyQt5, which qtpy would pick).
export QT_API="${QT_API:-pyqt6}"
export HF_HUB_OFFLINE=1
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/ruff format --check src tests benchmarks scripts
.venv/bin/mypy
xvfb-run -a .venv/bin/python -m pytest "$@"
# The whole suite (no arguments, as CI runs it) also checks what `pip install napari-ovsam` gives: the wheel,
# installed alone into a fresh environment, runs the demo, validates its manifest and drives the widget.
if [ "$#" -eq 0 ]; then
    bash scripts/smoke_wheel.sh
fi
