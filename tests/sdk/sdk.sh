#!/bin/bash
# sdk.sh STEP ...: the SDK tests' steps (tests/CMakeLists.txt, label sdk).
#   install BUILD PREFIX LIBDIR             cmake --install BUILD into a fresh PREFIX, then check
#                                           the SDK's files are there (libraries in PREFIX/LIBDIR)
#                                           and the installed porta-info runs
#   project PREFIX BUILD_DIR SPIRV CMAKE_ARGS...  configure and build tests/sdk/project against
#                                           PREFIX in a fresh BUILD_DIR; SPIRV (0 or 1): whether
#                                           its SPIR-V kernel builds are expected
#   host BUILD_DIR LIBPORTA                 run the project's host on LIBPORTA (its exit status)
#   pkg-config PREFIX LIBDIR DIR CC VERSION build a C program with pkg-config's flags for porta
#                                           (it links libporta) and run it on the CPU backend
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

expect_files() {
  local root="$1" file
  shift
  for file in "$@"; do
    [[ -e "$root/$file" ]] || fail "$root/$file is missing"
  done
  echo "ok: $root has ${*}"
}

step="$1"
shift
case "$step" in
  install)
    build="$1" prefix="$2" lib="$3"
    rm -rf "$prefix"
    mkdir -p "$prefix"
    if ! cmake --install "$build" --prefix "$prefix" >"$prefix/install.log" 2>&1; then
      cat "$prefix/install.log"
      fail "cmake --install $build --prefix $prefix"
    fi
    expect_files "$prefix" include/porta/porta.h include/porta/porta_kernel.h \
      include/porta/porta_plugin.h include/porta/plugin_kit/plugin_kit.h \
      include/porta/plugin_kit/op_plugin.h "$lib/libporta.so" "$lib/libporta.so.0" \
      "$lib/libporta_cpu.so" "$lib/libporta_plugin_kit.a" "$lib/cmake/porta/porta-config.cmake" \
      "$lib/cmake/porta/porta-config-version.cmake" "$lib/cmake/porta/porta-targets.cmake" \
      "$lib/cmake/porta/PortaKernelLibrary.cmake" "$lib/cmake/porta/plugin_exports.map" \
      "$lib/pkgconfig/porta.pc"
    # The installed tools find libporta and its plugins in the prefix.
    if [[ -x "$prefix/bin/porta-info" ]]; then
      info="$(PORTA_BACKEND=cpu "$prefix/bin/porta-info")" || fail "$prefix/bin/porta-info failed"
      grep -qF "$prefix/$lib/libporta_cpu.so" <<<"$info" ||
        fail "porta-info did not load the CPU backend from $prefix/$lib: $info"
      echo "ok: $prefix/bin/porta-info loads $prefix/$lib/libporta_cpu.so"
    fi
    ;;
  project)
    prefix="$1" dir="$2" spirv="$3"
    shift 3
    rm -rf "$dir"
    cmake -S "$here/project" -B "$dir" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
      -DPORTA_BACKEND_CUDA=OFF -DPORTA_BACKEND_HIP=OFF "$@"
    cmake --build "$dir"
    # Every flavour the installed Porta and this machine can build.
    files=(libporta_ops_example.so libporta_level_zero.so example_kernels.cpu-simt.so
      example_kernels.cpu-racecheck.so)
    if [[ "$(uname -m)" == x86_64 ]]; then
      files+=(example_kernels.cpu-x86-64.so example_kernels.cpu-x86-64-v3.so
        example_kernels.cpu-x86-64-v4.so)
    else
      files+=(example_kernels.cpu-native.so)
    fi
    if [[ "$spirv" == 1 ]]; then files+=(example_kernels.spv example_kernels.spir.bc); fi
    expect_files "$dir/lib" "${files[@]}"
    ;;
  host)
    exec "$1/example_host" "$2" "$1/lib"
    ;;
  pkg-config)
    prefix="$1" lib="$2" dir="$3" cc="$4" version="$5"
    mkdir -p "$dir"
    export PKG_CONFIG_PATH="$prefix/$lib/pkgconfig"
    found="$(pkg-config --modversion porta)"
    [[ "$found" == "$version" ]] || fail "pkg-config --modversion porta: '$found', not $version"
    read -ra flags <<<"$(pkg-config --cflags --libs porta)"
    echo "pkg-config --cflags --libs porta: ${flags[*]}"
    "$cc" -std=c11 -Wall -Wextra -Werror -pedantic -o "$dir/pkg_config_host" \
      "$here/pkg_config_host.c" "${flags[@]}"
    LD_LIBRARY_PATH="$prefix/$lib" PORTA_BACKEND=cpu "$dir/pkg_config_host"
    ;;
  *)
    fail "unknown step '$step'"
    ;;
esac
