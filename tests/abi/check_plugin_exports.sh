#!/bin/bash
# check_plugin_exports.sh PLUGIN...: every plugin exports porta_plugin_entry and nothing else
# (nm -D: no other defined dynamic symbol, weak and GNU-unique ones included).
set -u
status=0
for plugin in "$@"; do
  exported="$(nm -D --defined-only "$plugin" | awk '{print $NF}' | sort -u)"
  if [[ "$exported" != "porta_plugin_entry" ]]; then
    echo "FAIL: $plugin exports more than porta_plugin_entry:"
    nm -D --defined-only "$plugin" | grep -v ' porta_plugin_entry$'
    status=1
  else
    echo "ok: $plugin exports only porta_plugin_entry"
  fi
done
exit $status
