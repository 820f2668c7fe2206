# Finds the GPU toolchains and decides which GPU backends are built (PORTA_BACKEND_CUDA / _HIP).
#
# The plugins themselves are compiled by the host C++ compiler against the vendor's headers only
# and open the driver at run time, so what a build needs is the header (cuda.h, hip_runtime_api.h)
# for the plugin and the device compiler (nvcc, hipcc) for kernel libraries. Sets:
#   PORTA_BUILD_CUDA, PORTA_CUDA_INCLUDE_DIR, PORTA_NVCC
#   PORTA_BUILD_HIP, PORTA_HIP_INCLUDE_DIR, PORTA_HIPCC
# AUTO builds a backend when everything is found and says in one line why not otherwise; ON
# makes a missing piece a configure error that names it.

set(PORTA_CUDA_ARCHITECTURES "80;90" CACHE STRING
    "CUDA architectures kernel libraries are built for (SASS each, plus PTX of the highest)")
set(PORTA_HIP_ARCHITECTURES "gfx90a;gfx1030" CACHE STRING
    "AMD GPU architectures kernel libraries are built for (one code object each)")
# Pinned rather than the compiler's default (4 in ROCm 5, 5 in ROCm 6): version 4 loads on ROCm 5
# and 6 alike. tests/gpu/check_kernel_resources.py checks every code object has it.
set(PORTA_HIP_CODE_OBJECT_VERSION 4 CACHE STRING "AMD code object version of kernel libraries")

# Reports a backend that cannot be built: an error when it was required, a status line for AUTO.
function(_porta_gpu_missing backend)
  string(CONCAT why ${ARGN})
  if(PORTA_BACKEND_${backend} STREQUAL "ON")
    message(FATAL_ERROR "PORTA_BACKEND_${backend}=ON but ${why}")
  endif()
  message(STATUS "Porta: ${backend} backend not built: ${why}")
endfunction()

# ---- CUDA -----------------------------------------------------------------------------------------
set(PORTA_BUILD_CUDA FALSE)
if(NOT PORTA_BACKEND_CUDA STREQUAL "OFF")
  # CMAKE_CUDA_COMPILER, when given, tells FindCUDAToolkit where the toolkit is; /usr/local/cuda
  # is its default otherwise. CUDA is not enabled as a language: the plugin is host C++, and
  # kernel libraries are custom commands (see PortaKernelLibrary.cmake).
  find_package(CUDAToolkit QUIET)
  set(PORTA_NVCC "")
  if(CMAKE_CUDA_COMPILER)
    set(PORTA_NVCC "${CMAKE_CUDA_COMPILER}")
  elseif(CUDAToolkit_NVCC_EXECUTABLE)
    set(PORTA_NVCC "${CUDAToolkit_NVCC_EXECUTABLE}")
  endif()
  set(PORTA_CUDA_INCLUDE_DIR "")
  foreach(dir IN LISTS CUDAToolkit_INCLUDE_DIRS)
    if(EXISTS "${dir}/cuda.h")
      set(PORTA_CUDA_INCLUDE_DIR "${dir}")
      break()
    endif()
  endforeach()
  if(NOT PORTA_CUDA_INCLUDE_DIR)
    _porta_gpu_missing(CUDA "cuda.h was not found (install the CUDA toolkit, or pass "
                            "-DCMAKE_CUDA_COMPILER=/path/to/nvcc)")
  elseif(NOT PORTA_NVCC OR NOT EXISTS "${PORTA_NVCC}")
    _porta_gpu_missing(CUDA "nvcc was not found (pass -DCMAKE_CUDA_COMPILER=/path/to/nvcc)")
  else()
    set(PORTA_BUILD_CUDA TRUE)
    # Recorded beside each fatbin (<fatbin>.toolkit), in the driver API's encoding (13000 for
    # 13.0): the CUDA backend compares it with the driver's version before loading.
    string(REGEX MATCH "^([0-9]+)\\.([0-9]+)" _porta_cuda_version "${CUDAToolkit_VERSION}")
    math(EXPR PORTA_CUDA_TOOLKIT_VERSION "${CMAKE_MATCH_1} * 1000 + ${CMAKE_MATCH_2} * 10")
    message(STATUS "Porta: CUDA backend: cuda.h in ${PORTA_CUDA_INCLUDE_DIR}, nvcc ${PORTA_NVCC}, "
                   "kernels for ${PORTA_CUDA_ARCHITECTURES}")
  endif()
endif()

# ---- HIP ------------------------------------------------------------------------------------------
set(PORTA_BUILD_HIP FALSE)
if(NOT PORTA_BACKEND_HIP STREQUAL "OFF")
  find_program(PORTA_HIPCC hipcc HINTS ENV ROCM_PATH PATH_SUFFIXES bin PATHS /opt/rocm/bin)
  get_filename_component(_porta_hipcc_dir "${PORTA_HIPCC}" DIRECTORY)
  find_path(PORTA_HIP_INCLUDE_DIR hip/hip_runtime_api.h
            HINTS "${_porta_hipcc_dir}/../include" PATHS /opt/rocm/include)
  if(NOT PORTA_HIP_INCLUDE_DIR)
    _porta_gpu_missing(HIP "hip/hip_runtime_api.h was not found (Debian: libamdhip64-dev)")
  elseif(NOT PORTA_HIPCC)
    _porta_gpu_missing(HIP "hipcc was not found (Debian: hipcc)")
  else()
    # hipcc can be present without the device libraries it links, and with them for some
    # architectures only; one tiny compile per listed architecture, remembered per compiler and
    # list, tells before a kernel library fails to build.
    set(_porta_hip_probe_key
        "${PORTA_HIPCC};${PORTA_HIP_ARCHITECTURES};${PORTA_HIP_CODE_OBJECT_VERSION}")
    if(NOT PORTA_HIP_PROBE_KEY STREQUAL _porta_hip_probe_key)
      set(_probe_dir "${CMAKE_BINARY_DIR}/CMakeFiles/porta_hip_probe")
      file(MAKE_DIRECTORY "${_probe_dir}")
      file(WRITE "${_probe_dir}/probe.cpp" "__global__ void probe(int* p) { *p = 1; }\n")
      set(PORTA_HIP_PROBE_OK TRUE)
      set(_probe_failure "")
      foreach(_porta_hip_arch IN LISTS PORTA_HIP_ARCHITECTURES)
        execute_process(
          COMMAND "${PORTA_HIPCC}" -x hip --offload-arch=${_porta_hip_arch} --cuda-device-only
                  --no-gpu-bundle-output -mcode-object-version=${PORTA_HIP_CODE_OBJECT_VERSION}
                  -c probe.cpp -o probe-${_porta_hip_arch}.hsaco
          WORKING_DIRECTORY "${_probe_dir}" RESULT_VARIABLE _probe_result
          OUTPUT_VARIABLE _probe_output ERROR_VARIABLE _probe_output)
        if(NOT _probe_result EQUAL 0)
          string(REGEX REPLACE "\n.*" "" _probe_first_line "${_probe_output}")
          set(PORTA_HIP_PROBE_OK FALSE)
          set(_probe_failure "${_porta_hip_arch}: ${_probe_first_line}")
          break()
        endif()
      endforeach()
      set(PORTA_HIP_PROBE_OUTPUT "${_probe_failure}" CACHE INTERNAL "")
      set(PORTA_HIP_PROBE_OK ${PORTA_HIP_PROBE_OK} CACHE INTERNAL "")
      set(PORTA_HIP_PROBE_KEY "${_porta_hip_probe_key}" CACHE INTERNAL "")
    endif()
    if(NOT PORTA_HIP_PROBE_OK)
      _porta_gpu_missing(HIP "${PORTA_HIPCC} cannot compile a kernel for "
                             "${PORTA_HIP_PROBE_OUTPUT}")
    else()
      set(PORTA_BUILD_HIP TRUE)
      message(STATUS "Porta: HIP backend: headers in ${PORTA_HIP_INCLUDE_DIR}, hipcc "
                     "${PORTA_HIPCC}, kernels for ${PORTA_HIP_ARCHITECTURES}")
    endif()
  endif()
endif()
