#!/usr/bin/env bash
# Build interfaces/vision_msgs with the venv's own ament_cmake/rosidl wheels and install it INTO
# the venv prefix (see scripts/build_interface_package.sh, which does the work). Does nothing
# when `import vision_msgs.msg` already works (a ROS 2 install, or a previous run).
#
#   scripts/build_vision_msgs.sh VENV_DIR
#
# INTERFACE_BUILD_DIR=DIR (or the older VISION_MSGS_BUILD_DIR) keeps the build tree there.
set -euo pipefail
[[ $# -eq 1 ]] || {
  echo "build_vision_msgs: error: usage: $0 VENV_DIR" >&2
  exit 1
}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export INTERFACE_BUILD_DIR="${INTERFACE_BUILD_DIR:-${VISION_MSGS_BUILD_DIR:-}}"
exec bash "$here/build_interface_package.sh" "$1" "$here/../interfaces/vision_msgs" \
  vision_msgs.msg.Detection2DArray
