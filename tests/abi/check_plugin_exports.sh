#!/bin/bash
# check_plugin_exports.sh PLUGIN|FOLDER...: every plugin exports porta_plugin_entry and nothing
# else (nm -D: no other defined dynamic symbol, weak and GNU-unique ones included). A FOLDER
# stands for every plugin in it (libporta_*.so) and must hold at least one.
set -u
status=0
plugins=()
for argument in "$@"; do
  if [[ -d "$argument" ]]; then
    found=("$argument"/libporta_*.so)
    if [[ ! -e "${found[0]}" ]]; then
      echo "FAIL: no plugin (libporta_*.so) in $argument"
      status=1
      continue
    fi
    plugins+=("${found[@]}")
  else
    plugins+=("$argument")
  fi
done
for plugin in "${plugins[@]}"; do
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
