#!/usr/bin/env bash
# Tests the Python bindings against a built libmoas: bindings/python/run_tests.sh [BUILD_DIR] [pytest args...]
# BUILD_DIR defaults to ../../build relative to this script. A virtual environment in BUILD_DIR/python-venv (made on
# first use) gets numpy, pytest and this package; pytest then runs against BUILD_DIR/libmoas.so.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="${1:-$here/../../build}"
[ $# -gt 0 ] && shift
build="$(cd "$build" && pwd)"
lib="$build/libmoas.so"
if [ ! -e "$lib" ]; then
  echo "run_tests.sh: $lib not found: build libmoas first (cmake --build $build --target moas)" >&2
  exit 2
fi

venv="$build/python-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install numpy pytest safetensors "setuptools>=61" wheel
# No build isolation: setuptools is already in the venv, so installing the package needs no download.
"${pip[@]}" install --no-deps --no-build-isolation --force-reinstall "$here"

export MOAS_LIBRARY="$lib"
export MOAS_INCLUDE_DIR="${MOAS_INCLUDE_DIR:-$here/../../include}"
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"
export OPENBLAS_L2_SIZE="${OPENBLAS_L2_SIZE:-2097152}"
export OMP_WAIT_POLICY=passive
unset MOAS_LIBRARY_DIR

# The venv's pytest (not `python -m pytest`) keeps the source tree off sys.path: the installed package is tested.
cd "$here"
exec "$venv/bin/pytest" -q -p no:cacheprovider tests "$@"
