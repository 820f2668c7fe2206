# shellcheck shell=bash
# Set-up shared by tools/run and tools/test; source it, do not run it. It defines PORTA_ROOT (the
# repository root, found from this file's own path), cds there, and offers:
#   porta_section TITLE           print a short section header, with the minutes since the start
#   porta_install_packages        apt-get install the Debian packages below that are missing
#   porta_configure DIR [ARGS]    configure DIR (relative to the root) with Ninja, Release
#   porta_build DIR               build DIR with one job per core

# Everything the build, the tests and the tools need, in one place.
PORTA_DEB_PACKAGES=(
  cmake ninja-build g++ pkg-config
  catch2 libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev
  libopenblas-dev libdnnl-dev libze-dev
  libbenchmark-dev ocl-icd-opencl-dev
  zlib1g-dev dataset-fashion-mnist
  # The HIP backend and the kernel libraries' AMD code objects. hipcc's Depends suffice (clang,
  # lld, the ROCm device libraries, libamdhip64-dev's headers); it has no Recommends. No AMD GPU
  # or driver is needed to build: the plugin opens libamdhip64 at run time.
  hipcc libamdhip64-dev
  # llvm-readelf reads the AMD code objects' metadata for the resource checks (tests/gpu/).
  llvm-15
  python3 python3-matplotlib
  # tools/compare makes its PyTorch environment with python3 -m venv.
  python3-venv
  # SPIR-V kernel libraries (clang 15, an LLVM 15 pass plugin, the SPIR-V translator and tools),
  # the OpenCL backend's CI device (PoCL on the CPU) and Intel's offline compiler for the Intel
  # GPU build check; clang 15's sanitizer runtimes and libFuzzer serve the sanitized build and the
  # fuzz targets (tools/lib/sanitize.sh).
  clang-15 libclang-common-15-dev llvm-15-dev llvm-spirv-15 spirv-tools pocl-opencl-icd clinfo
  intel-opencl-icd
  # The MPI collective engine and launcher (porta_comm.h, mpirun tests).
  libopenmpi-dev openmpi-bin
)

PORTA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PORTA_JOBS="$(nproc)"
cd "$PORTA_ROOT" || exit 1

porta_section() {
  printf '\n==== %d:%02d %s ====\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"
}

porta_install_packages() {
  if ! command -v dpkg-query >/dev/null; then
    echo "dpkg-query not found: not a Debian system, assuming these are installed:" \
      "${PORTA_DEB_PACKAGES[*]}"
    return 0
  fi
  local missing=() pkg
  for pkg in "${PORTA_DEB_PACKAGES[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]]; then
      missing+=("$pkg")
    fi
  done
  if ((${#missing[@]} == 0)); then
    echo "All ${#PORTA_DEB_PACKAGES[@]} Debian packages present."
    return 0
  fi
  echo "Installing missing packages: ${missing[*]}"
  local sudo=()
  if [[ "$(id -u)" -ne 0 ]]; then sudo=(sudo); fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    "${missing[@]}"
}

porta_configure() {
  local dir="$1"
  shift
  local args=(-S "$PORTA_ROOT" -B "$PORTA_ROOT/$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
    --no-warn-unused-cli)
  # The CUDA backend is built when nvcc is found; /usr/local/cuda is often not on PATH.
  if [[ -x /usr/local/cuda/bin/nvcc ]]; then
    args+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
  fi
  cmake "${args[@]}" "$@"
}

# porta_build DIR [TARGET...]: everything, or only the targets named.
porta_build() {
  local dir="$1"
  shift
  cmake --build "$PORTA_ROOT/$dir" --parallel "$PORTA_JOBS" ${1:+--target "$@"}
}

# porta_test_programs DIR [CTEST-ARGS...]: the programs that the tests ctest selects in the built
# tree DIR run (Catch2 tests are listed only once their program is built).
porta_test_programs() {
  local dir="$1"
  shift
  ctest --test-dir "$PORTA_ROOT/$dir" --show-only=json-v1 "$@" | python3 -c '
import json, os, sys
tests = json.load(sys.stdin)["tests"]
print(" ".join(sorted({os.path.basename(t["command"][0]) for t in tests})))'
}
