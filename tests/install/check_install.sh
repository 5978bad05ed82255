#!/usr/bin/env bash
# Installs the build into a scratch prefix, then builds the README example against it twice: through
# find_package(moas) and through pkg-config. Usage: check_install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
source_dir=$2
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
test -f "$prefix/include/moas.h"
example="$source_dir/examples/quickstart.c"

cmake -S "$source_dir/tests/install" -B "$prefix/consumer" -DCMAKE_PREFIX_PATH="$prefix" \
  -DEXAMPLE_SOURCE="$example" >/dev/null
cmake --build "$prefix/consumer" >/dev/null
(cd "$prefix" && LD_LIBRARY_PATH="$prefix/lib:$prefix/lib64" "$prefix/consumer/consumer")

libdir=$(ls -d "$prefix"/lib*/pkgconfig | head -n 1)
cc -std=c99 "$example" -o "$prefix/consumer_pc" $(PKG_CONFIG_PATH="$libdir" pkg-config --cflags --libs moas)
(cd "$prefix" && LD_LIBRARY_PATH="$prefix/lib:$prefix/lib64" "$prefix/consumer_pc")
echo "install check: find_package and pkg-config consumers built and ran"
