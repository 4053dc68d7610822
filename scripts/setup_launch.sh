#!/usr/bin/env bash
# Optional, after scripts/setup.sh: the ROS 2 launch system and command line in the standalone
# venv, so that `ros2 launch pvt_mtl_ros perception.launch.py` and `ros2 run pvt_mtl_ros
# perception_node` work there after `source .venv/bin/activate`.
#
#   scripts/setup_launch.sh [SRC_DIR]        (or ROS2_SRC=SRC_DIR; make setup-launch)
#
# Environment: VENV (default .venv), ROS2_SRC, ROS2_GIT_BASE, ROS2_CLONE_DIR (default
# $VENV/src), LAUNCH_VERSION & co (the pins below), SETUP_LAUNCH_FORCE=1 (ignore the stamp).
#
# SRC_DIR holds checkouts of ros2/launch, ros2/launch_ros, ros2/ros2cli and ros2/rcl_interfaces
# (folders of those names) at the pinned versions below. Without it the pinned tags are cloned
# from $ROS2_GIT_BASE (default https://github.com/ros2) into $VENV/src. Then:
#   - pip installs launch (+ launch_xml, launch_yaml), launch_ros, ros2launch, ros2cli,
#     ros2pkg, ros2run from those sources and their PyPI dependencies into the venv;
#   - builds composition_interfaces (launch_ros needs it) into the venv as vision_msgs is built;
#   - makes $VENV/colcon, a venv of its own with colcon (its --symlink-install needs
#     setuptools < 80, which would be a downgrade in the project venv);
#   - registers pvt_mtl_ros in the venv's ament index the way colcon's --symlink-install lays
#     out an ament_python package (file symlinks to the checkout), on every run;
#   - adds AMENT_PREFIX_PATH=<venv> to bin/activate: ament_index, so ros2 launch/run, reads it.
# Idempotent: a stamp records the inputs of the last successful install. Any failure stops it
# with one "setup_launch: error:" line and a non-zero exit.
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

die() {
  echo "setup_launch: error: $*" >&2
  exit 1
}
log() { echo "[setup-launch] $*"; }

# Pinned sources: ROS 2 Kilted-era releases that run with the rclpy 9.1.2 wheels.
LAUNCH_VERSION="${LAUNCH_VERSION:-3.7.1}"
LAUNCH_ROS_VERSION="${LAUNCH_ROS_VERSION:-0.28.0}"
ROS2CLI_VERSION="${ROS2CLI_VERSION:-0.36.1}"
RCL_INTERFACES_VERSION="${RCL_INTERFACES_VERSION:-2.2.0}"
declare -A VERSION=(
  [launch]="$LAUNCH_VERSION" [launch_ros]="$LAUNCH_ROS_VERSION"
  [ros2cli]="$ROS2CLI_VERSION" [rcl_interfaces]="$RCL_INTERFACES_VERSION"
)
# The package whose package.xml carries each repository's version.
declare -A MARKER=(
  [launch]=launch [launch_ros]=launch_ros [ros2cli]=ros2cli
  [rcl_interfaces]=composition_interfaces
)
REPOS=(launch launch_ros ros2cli rcl_interfaces)
PY_PACKAGES=(launch/launch launch/launch_xml launch/launch_yaml launch_ros/launch_ros
  launch_ros/ros2launch ros2cli/ros2cli ros2cli/ros2pkg ros2cli/ros2run)
# What those import from PyPI beyond the project's requirements (lark, yaml, catkin_pkg, ...).
PYPI=(osrf-pycommon==2.0.2 psutil==7.2.2 argcomplete==3.7.2)
COLCON=(colcon-common-extensions==0.3.0 setuptools==79.0.1)

SRC_ARG="${1:-${ROS2_SRC:-}}"
VENV="${VENV:-.venv}"
[[ -x "$VENV/bin/python" ]] || die "no virtual environment at $VENV: run make setup first"
VENV="$(cd "$VENV" && pwd)"
PY="$VENV/bin/python"
(cd / && "$PY" -c "import rclpy, ament_index_python" 2>/dev/null) ||
  die "rclpy does not import in $VENV: run make setup first"
STAMP="$VENV/.pvt_mtl_ros-setup-launch"
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)

package_version() { # package.xml -> its <version>
  sed -n 's:.*<version>\(.*\)</version>.*:\1:p' "$1" | head -n1
}

# --- the Python packages, composition_interfaces and colcon, unless the stamp matches ---
resolve_sources() { # -> SRC: the folder of checkouts, each at its pinned version
  SRC="$SRC_ARG"
  if [[ -n "$SRC" ]]; then
    [[ -d "$SRC" ]] || die "source folder $SRC does not exist"
    SRC="$(cd "$SRC" && pwd)"
  else
    SRC="${ROS2_CLONE_DIR:-$VENV/src}"
    base="${ROS2_GIT_BASE:-https://github.com/ros2}"
    mkdir -p "$SRC"
    for repo in "${REPOS[@]}"; do
      xml="$SRC/$repo/${MARKER[$repo]}/package.xml"
      [[ -f "$xml" && "$(package_version "$xml")" == "${VERSION[$repo]}" ]] && continue
      log "cloning $base/$repo at ${VERSION[$repo]}"
      rm -rf "$SRC/$repo"
      out="$(git -c advice.detachedHead=false clone --quiet --depth 1 \
        --branch "${VERSION[$repo]}" "$base/$repo" "$SRC/$repo" 2>&1)" ||
        die "cannot clone $base/$repo at ${VERSION[$repo]} ($(grep -m1 . <<<"$out")); pass a" \
          "folder of checkouts instead: ROS2_SRC=DIR make setup-launch"
    done
  fi
  for repo in "${REPOS[@]}"; do
    xml="$SRC/$repo/${MARKER[$repo]}/package.xml"
    [[ -f "$xml" ]] || die "$SRC/$repo is not a checkout of ros2/$repo (no ${xml#"$SRC"/})"
    got="$(package_version "$xml")"
    [[ "$got" == "${VERSION[$repo]}" ]] ||
      die "$SRC/$repo is version $got, want ${VERSION[$repo]} (git checkout ${VERSION[$repo]})"
  done
}

installed_ok() {
  (cd / && "$PY" -c "import launch, launch_ros, ros2cli, ros2launch, ros2pkg, ros2run
from composition_interfaces.srv import LoadNode
LoadNode.__class__.__import_type_support__()" 2>/dev/null) &&
    "$VENV/colcon/bin/python" -c "import colcon_core, colcon_ros" 2>/dev/null
}
# A folder given is always checked (a typo fails loudly); clones are made only when something
# is to be installed, so a second run needs neither ROS2_SRC nor the network.
[[ -n "$SRC_ARG" ]] && resolve_sources
want="$( (cat "$SELF" && printf '%s\n' "${VERSION[@]}") | sha256sum | cut -c1-16)"
if [[ -z "${SETUP_LAUNCH_FORCE:-}" && "$(cat "$STAMP" 2>/dev/null || true)" == "$want" ]] &&
  installed_ok; then
  log "launch, ros2cli, composition_interfaces and colcon up to date ($VENV)"
else
  [[ -n "$SRC_ARG" ]] || resolve_sources
  log "installing ${PYPI[*]}"
  "${PIP[@]}" "${PYPI[@]}" || die "pip could not install ${PYPI[*]}"
  log "installing ${PY_PACKAGES[*]} from $SRC"
  # Built from copies: setuptools writes build/ and *.egg-info into the folder it builds.
  # --no-deps: their install_requires name ROS packages (ament_index_python, ...) that the
  # ros-* wheels provide under other distribution names.
  copies="$(mktemp -d -t pvt_setup_launch.XXXXXX)"
  trap 'rm -rf "$copies"' EXIT
  for pkg in "${PY_PACKAGES[@]}"; do cp -R "$SRC/$pkg" "$copies/"; done
  "${PIP[@]}" --no-deps --no-build-isolation "${PY_PACKAGES[@]/#*\//$copies/}" ||
    die "pip could not install the launch/ros2cli packages from $SRC"
  bash scripts/build_interface_package.sh "$VENV" "$SRC/rcl_interfaces/composition_interfaces" \
    composition_interfaces.srv.LoadNode || die "composition_interfaces did not build"
  log "creating $VENV/colcon with ${COLCON[*]}"
  [[ -x "$VENV/colcon/bin/python" ]] || "$PY" -m venv "$VENV/colcon" ||
    die "could not create the colcon venv $VENV/colcon"
  "$VENV/colcon/bin/python" -m pip install --quiet --disable-pip-version-check "${COLCON[@]}" ||
    die "pip could not install ${COLCON[*]} into $VENV/colcon"
  installed_ok || die "installed, but launch_ros, ros2cli or colcon still do not import"
  echo "$want" >"$STAMP"
fi

# --- pvt_mtl_ros in the venv's ament index, as colcon build --symlink-install lays it out ---
# share/ files come from setup.py's data_files, executables from its console_scripts, so this
# stays what colcon installs; stale entries (a removed launch file) go with the old tree.
log "registering pvt_mtl_ros in the ament index of $VENV"
layout="$("$PY" - <<'EOF'
from setuptools import distutils  # noqa: F401  (setuptools' distutils for run_setup)
from distutils.core import run_setup

dist = run_setup("setup.py", stop_after="init")
for dest, files in dist.data_files:
    for src in files:
        print(f"data {dest} {src}")
for script in dist.entry_points["console_scripts"]:
    print(f"exe {script.split('=')[0].strip()}")
EOF
)" || die "could not read the data files and executables of setup.py"
rm -rf "$VENV/share/pvt_mtl_ros" "$VENV/lib/pvt_mtl_ros"
mkdir -p "$VENV/share/pvt_mtl_ros" "$VENV/lib/pvt_mtl_ros"
while read -r kind dest src; do
  if [[ "$kind" == data ]]; then
    mkdir -p "$VENV/$dest"
    ln -sfn "$ROOT/$src" "$VENV/$dest/$(basename "$src")"
  else
    [[ -x "$VENV/bin/$dest" ]] || die "$VENV/bin/$dest is missing: run make setup"
    ln -sfn "../../bin/$dest" "$VENV/lib/pvt_mtl_ros/$dest"
  fi
done <<<"$layout"

# --- AMENT_PREFIX_PATH in bin/activate (bash/zsh), once ---
if ! grep -q "pvt_mtl_ros setup-launch" "$VENV/bin/activate"; then
  cat >>"$VENV/bin/activate" <<'EOF'
# >>> pvt_mtl_ros setup-launch: the venv is a ROS 2 prefix (ament index) for ros2 launch/run
case ":${AMENT_PREFIX_PATH:-}:" in
  *":$VIRTUAL_ENV:"*) ;;
  *) export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
esac
# <<< pvt_mtl_ros setup-launch
EOF
fi

# --- fail here, not at the first ros2 launch ---
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
prefix="$(cd / && "$VENV/bin/ros2" pkg prefix pvt_mtl_ros 2>&1)" ||
  die "ros2 pkg prefix pvt_mtl_ros failed: $prefix"
[[ "$prefix" == "$VENV" ]] || die "ros2 finds pvt_mtl_ros in $prefix, not in $VENV"
exes="$(cd / && "$VENV/bin/ros2" pkg executables pvt_mtl_ros 2>&1)" ||
  die "ros2 pkg executables pvt_mtl_ros failed: $exes"
grep -qx "pvt_mtl_ros perception_node" <<<"$exes" ||
  die "ros2 pkg executables pvt_mtl_ros does not list perception_node: $exes"
log "ok: launch $LAUNCH_VERSION, launch_ros $LAUNCH_ROS_VERSION, ros2cli $ROS2CLI_VERSION," \
  "composition_interfaces $RCL_INTERFACES_VERSION; ros2 finds pvt_mtl_ros in $VENV" \
  "(source $VENV/bin/activate, then ros2 launch pvt_mtl_ros perception.launch.py)"
