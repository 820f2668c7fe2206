#!/bin/bash
# check_plugin_needs.sh PLUGIN: a GPU backend plugin needs no vendor library at link time (it
# dlopens the driver itself), so it loads, and says why it is unavailable, where none is installed.
set -u
plugin="$1"
status=0
needed="$(readelf -d "$plugin" | awk '/NEEDED/ {print $5}' | tr -d '[]')"
for library in $needed; do
  case "$library" in
    libc.so.*|libm.so.*|libgcc_s.so.*|libstdc++.so.*|libdl.so.*|libpthread.so.*|ld-linux*) ;;
    *) echo "FAIL: $plugin needs $library at link time"; status=1 ;;
  esac
done
if ((status == 0)); then
  echo "ok: $plugin needs only: $(echo $needed)"
fi
exit $status
