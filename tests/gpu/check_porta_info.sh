#!/bin/bash
# check_porta_info.sh PORTA_INFO BACKEND: with PORTA_BACKEND=BACKEND on a machine without that
# backend's driver or device, porta-info exits non-zero and says why; where the backend works it
# exits 0 (reported as skipped: there is nothing unavailable to check).
set -u
info="$1"
backend="$2"
output="$(PORTA_BACKEND="$backend" PORTA_LOG=off "$info" 2>&1)"
rc=$?
if ((rc == 0)); then
  echo "$output" | grep -E "^  backend  $backend " || true
  echo "SKIPPED: the $backend backend is usable on this machine"
  exit 77
fi
echo "$output" | tail -3
fail() {
  echo "FAIL: $*"
  exit 1
}
echo "$output" | grep -qE "^  backend  $backend +unavailable" ||
  fail "the loader report does not list $backend as unavailable"
echo "$output" | grep -q "PORTA_ERROR_UNAVAILABLE" || fail "no PORTA_ERROR_UNAVAILABLE in the output"
echo "$output" | grep -qE "reason: +$backend: " || fail "no reason given for $backend"
echo "ok: porta-info exits $rc and says why $backend is unavailable"
