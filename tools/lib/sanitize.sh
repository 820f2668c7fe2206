# shellcheck shell=bash
# The sanitized builds, shared by tools/test and tools/fuzz; source it after setup.sh. It defines:
#   porta_host_kernel_level       the one CPU kernel-library ISA level a sanitized build compiles
#   porta_configure_asan          configure build-asan/ (clang, ASan+UBSan, libFuzzer targets)
#   porta_sanitizer_environment   export the sanitizers' options (suppressions, halting)

# The one kernel-library ISA level this host runs best: the sanitized builds compile no other.
porta_host_kernel_level() {
  if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
    echo x86-64-v4
  elif grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
    echo x86-64-v3
  else
    echo x86-64
  fi
}

porta_configure_asan() {
  # The GPU plugins cannot run here (their no-driver tests run in build/); of the tools, only
  # porta-train's file readers matter here, and the fuzz targets build those. OpenCL runs in
  # build/: its SPIR-V pass plugin runs inside opt-15, which has no sanitizer runtime.
  porta_configure build-asan -DCMAKE_C_COMPILER=clang-15 -DCMAKE_CXX_COMPILER=clang++-15 \
    -DPORTA_SANITIZE=address,undefined -DPORTA_BUILD_FUZZERS=ON -DPORTA_BUILD_TOOLS=OFF \
    -DPORTA_BACKEND_CUDA=OFF -DPORTA_BACKEND_HIP=OFF -DPORTA_BACKEND_LEVEL_ZERO=OFF \
    -DPORTA_BACKEND_OPENCL=OFF \
    -DPORTA_CPU_KERNEL_LEVELS="$(porta_host_kernel_level)" "$@"
}

porta_sanitizer_environment() {
  # The shared runtime follows libstdc++ in the fuzz targets' link order (libFuzzer pulls it in
  # first); it still comes before libc, whose allocator it replaces.
  export ASAN_OPTIONS="detect_leaks=1:verify_asan_link_order=0:strict_string_checks=1"
  export LSAN_OPTIONS="suppressions=$PORTA_ROOT/tests/sanitizers/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
}
