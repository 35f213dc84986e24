#!/usr/bin/env bash
# Build the demo tree into $1: bin/hello with RUNPATH $ORIGIN/../lib, lib/libgreet.so.1.
set -euo pipefail
out=${1:?usage: build.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/bin" "$out/lib"
gcc -shared -fPIC -Wl,-soname,libgreet.so.1 -o "$out/lib/libgreet.so.1.0" "$here/greet.c"
ln -sf libgreet.so.1.0 "$out/lib/libgreet.so.1"
gcc -o "$out/bin/hello" "$here/main.c" "$out/lib/libgreet.so.1.0" -lm \
  -Wl,-rpath,'$ORIGIN/../lib' -Wl,--enable-new-dtags
