#!/usr/bin/env bash
# Checks the SPIR-V kernel libraries of the build.
#   check_spirv.sh no-fp64 SPIRV-DIS MODULE.spv...   fails if a module declares the Float64
#                                                     capability (fp64 math, which many GPUs lack)
#   check_spirv.sh ocloc OCLOC DEVICE MODULE.spv...  fails unless Intel's offline compiler builds
#                                                     every module for DEVICE
set -euo pipefail
mode="$1"
shift
case "$mode" in
  no-fp64)
    dis="$1"
    shift
    status=0
    for module in "$@"; do
      if "$dis" "$module" | grep -q "OpCapability Float64"; then
        echo "FAILED: $module needs Float64 (a double in a kernel):"
        "$dis" "$module" | grep -n "OpTypeFloat 64" | head -5
        status=1
      else
        echo "ok: $module has no Float64"
      fi
    done
    exit "$status"
    ;;
  ocloc)
    ocloc="$1"
    device="$2"
    shift 2
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
    status=0
    for module in "$@"; do
      name="$(basename "$module" .spv)"
      if "$ocloc" compile -q -file "$module" -spirv_input -device "$device" -out_dir "$out" \
        -output "$name" >"$out/log" 2>&1; then
        echo "ok: $module builds for $device"
      else
        echo "FAILED: $module does not build for $device:"
        cat "$out/log"
        status=1
      fi
    done
    exit "$status"
    ;;
  *)
    echo "usage: $0 no-fp64 SPIRV-DIS MODULE... | ocloc OCLOC DEVICE MODULE..." >&2
    exit 2
    ;;
esac
