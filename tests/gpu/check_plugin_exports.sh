#!/bin/bash
# check_plugin_exports.sh PLUGIN: a GPU backend plugin exports porta_plugin_entry and nothing
# else, and needs no vendor library at link time (it dlopens the driver itself).
set -u
plugin="$1"
status=0
exported="$(readelf --dyn-syms -W "$plugin" | awk '$7 != "UND" && $5 != "LOCAL" && $8 != "" && NR > 3 {print $8}' | sort -u)"
if [[ "$exported" != "porta_plugin_entry" ]]; then
  echo "FAIL: $plugin exports more than porta_plugin_entry:"
  echo "$exported"
  status=1
fi
needed="$(readelf -d "$plugin" | awk '/NEEDED/ {print $5}' | tr -d '[]')"
for library in $needed; do
  case "$library" in
    libc.so.*|libm.so.*|libgcc_s.so.*|libstdc++.so.*|libdl.so.*|libpthread.so.*|ld-linux*) ;;
    *) echo "FAIL: $plugin needs $library at link time"; status=1 ;;
  esac
done
if ((status == 0)); then
  echo "ok: $plugin exports only porta_plugin_entry and needs only: $(echo $needed)"
fi
exit $status
