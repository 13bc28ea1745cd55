#!/usr/bin/env bash
# Build BUILD_DIR/opticam-explain against the OpenVINO runtime of the installed `openvino` wheel.
# Needs: cmake, a C++17 compiler, libpng and libjpeg headers (Debian: libpng-dev libjpeg-dev).
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python}"
ov_cmake="$("$python" -c 'import openvino, os; print(os.path.join(os.path.dirname(openvino.__file__), "cmake"))')" || {
  echo "$0: the openvino Python package is not installed (pip install openvino)" >&2
  exit 1
}
cmake -S "$here" -B "$1" -DCMAKE_BUILD_TYPE=Release -DOpenVINO_DIR="$ov_cmake" >/dev/null
cmake --build "$1" --parallel "${JOBS:-2}"
echo "$1/opticam-explain"
