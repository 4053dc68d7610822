#!/usr/bin/env bash
# One-command standalone install: a virtual environment in the checkout with pinned versions,
# the project itself (editable) and, where vision_msgs / foxglove_msgs are not importable, our
# builds of them.
# Idempotent: a second run finds everything in place and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.pvt_mtl_ros-setup"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi

# The stamp records the inputs of the last successful install: same inputs, nothing to do.
want="$(cat requirements.txt setup.py setup.cfg package.xml | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
  echo "[setup] installing pinned requirements (torch, timm, ROS 2 wheels, ...)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "[setup] installing pvt_mtl_ros (editable)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" > "$STAMP"
else
  echo "[setup] python packages up to date ($VENV)"
fi

bash scripts/build_vision_msgs.sh "$VENV"
# foxglove_msgs (ImageAnnotations, which Foxglove's Image panel draws): our copy of the annotation
# messages, built the same way, only where `import foxglove_msgs.msg` fails.
bash scripts/build_interface_package.sh "$VENV" interfaces/foxglove_msgs \
  foxglove_msgs.msg.ImageAnnotations

# Fail here, not in the first test, when anything is missing.
"$VENV/bin/python" - <<'PY'
import rclpy, torch, torchvision, timm, cv2, pycocotools, rosbags  # noqa: F401
from vision_msgs.msg import Detection2DArray  # noqa: F401
from foxglove_msgs.msg import ImageAnnotations  # noqa: F401
import pvt_mtl_ros  # noqa: F401
print(f"[setup] ok: torch {torch.__version__}, timm {timm.__version__}, rclpy, vision_msgs, foxglove_msgs importable")
PY
