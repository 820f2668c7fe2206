# porta_add_kernel_library(<name> SOURCES ... [INCLUDES ...] [GPU_ONLY] [NO_INSTALL])
# Compiles kernels written in the portable dialect (include/porta/porta_kernel.h) once for every
# target the build has, into lib/:
#   CPU:  <name>.cpu-<level>.so for each instruction-set level in PORTA_CPU_KERNEL_LEVELS, so that
#         the compiler vectorises for AVX-512 where the host has it and for AVX2 or SSE2 elsewhere.
#   CUDA: <name>.cuda.fatbin (nvcc): SASS for each of PORTA_CUDA_ARCHITECTURES and PTX of the
#         highest, which the driver compiles for newer GPUs.
#   HIP:  <name>.hip-<arch>.hsaco (hipcc): one code object for each of PORTA_HIP_ARCHITECTURES.
#   SPIR-V (OpenCL, Level Zero): <name>.spv, checked by spirv-val in the build, and <name>.spir.bc
#         (SPIR 1.2 bitcode) for OpenCL drivers that take no SPIR-V; see PortaSpirv.cmake and
#         PortaSpirvToolchain.cmake.
# On a GPU the sources are compiled together, as one translation unit that includes them all (a
# module is one code object, and this needs no device linking), so names with internal linkage
# must not clash between them. GPU_ONLY leaves the CPU builds out. NO_INSTALL keeps the library
# out of `cmake --install` (tests' kernels).
# SIMT: <name>.cpu-simt.so and <name>.cpu-racecheck.so run the GPU model on the host (a fiber per
#       work-item, a barrier per inner loop); the racecheck one also checks every memory access
#       for races between work-items. The CPU backend loads them for PORTA_CPU_MODE=simt|racecheck.
# porta_module_load(device, "lib/<name>") picks the build that fits the device.
# The target <name> builds them all. The same function serves an installed Porta
# (find_package(porta)): it builds the CPU flavours when that Porta has the CPU backend, and the
# GPU ones whose backend it has and whose toolchain is found (porta-config.cmake says which).
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(PORTA_CPU_KERNEL_LEVELS "x86-64;x86-64-v3;x86-64-v4" CACHE STRING
      "CPU instruction-set levels kernel libraries are built for")
else()
  set(PORTA_CPU_KERNEL_LEVELS "native" CACHE STRING
      "CPU instruction-set levels kernel libraries are built for")
endif()

function(porta_add_kernel_library name)
  cmake_parse_arguments(ARG "GPU_ONLY;NO_INSTALL" "" "SOURCES;INCLUDES" ${ARGN})
  add_custom_target(${name})
  # Read by the helpers below: whether what they build is installed.
  set(install_kernels TRUE)
  if(ARG_NO_INSTALL)
    set(install_kernels FALSE)
  endif()
  if(PORTA_BUILD_CUDA OR PORTA_BUILD_HIP OR PORTA_BUILD_SPIRV)
    _porta_add_gpu_kernels(${name} "${ARG_SOURCES}" "${ARG_INCLUDES}")
  endif()
  get_property(backends GLOBAL PROPERTY PORTA_BUILT_BACKENDS)
  if("cpu" IN_LIST backends AND NOT ARG_GPU_ONLY)
    foreach(level IN LISTS PORTA_CPU_KERNEL_LEVELS)
      set(target ${name}.cpu-${level})
      add_library(${target} MODULE ${ARG_SOURCES})
      target_link_libraries(${target} PRIVATE porta::headers)
      target_include_directories(${target} PRIVATE ${ARG_INCLUDES})
      set_target_properties(${target} PROPERTIES PREFIX "" OUTPUT_NAME ${name}.cpu-${level}
                                                 LINKER_LANGUAGE CXX)
      if(level STREQUAL "native")
        target_compile_options(${target} PRIVATE -O3)
      else()
        target_compile_options(${target} PRIVATE -O3 -march=${level} -mtune=generic)
      endif()
      # The dialect's 16-lane vectors pass between functions of one library only, so GCC's notes
      # that their ABI differs between ISA levels (-Wpsabi) do not apply.
      target_compile_options(${target} PRIVATE $<$<CXX_COMPILER_ID:GNU>:-Wno-psabi>)
      _porta_cpu_kernel_options(${target})
      if(install_kernels)
        install(TARGETS ${target} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
      endif()
      add_dependencies(${name} ${target})
    endforeach()
    _porta_add_simt_kernels(${name} "${ARG_SOURCES}" "${ARG_INCLUDES}")
  endif()
endfunction()

# What every CPU build of a kernel library shares. Kernels are leaf code: no exceptions cross them,
# and errno is never read. The fuzzers' coverage counters stay out (PORTA_BUILD_FUZZERS): kernels'
# branches follow sizes, not the structure of a fuzzed input, and counting them slows every test of
# the sanitized build. UBSan's pointer-overflow check stays out too: it guards every address the
# unrolled micro-kernels compute, and more than doubled the sanitized compile of the convolution
# kernels; an address out of its buffer is AddressSanitizer's to catch where it is read or written.
function(_porta_cpu_kernel_options target)
  target_compile_options(${target} PRIVATE -fno-exceptions -fno-math-errno)
  if(PORTA_BUILD_FUZZERS)
    target_compile_options(${target} PRIVATE -fno-sanitize=fuzzer-no-link)
  endif()
  if(PORTA_SANITIZE MATCHES "undefined")
    target_compile_options(${target} PRIVATE -fno-sanitize=pointer-overflow)
  endif()
endfunction()

# The SIMT builds: the dialect's GPU branch on the host (PORTA_SIMT), linked with the SIMT runtime
# (backends/cpu/simt/). The racecheck build is unoptimised, so that values kept outside inner()
# live in memory, and compiled with ThreadSanitizer's instrumentation, whose entry points the
# checker in its runtime defines (no sanitizer runtime is linked). A sanitizer build (PORTA_SANITIZE)
# has no racecheck runtime, so no racecheck builds: its instrumentation would be another's.
function(_porta_add_simt_kernels name sources includes)
  set(variants simt)
  if(TARGET porta::racecheck_runtime)
    list(APPEND variants racecheck)
  endif()
  foreach(variant IN LISTS variants)
    set(target ${name}.cpu-${variant})
    add_library(${target} MODULE ${sources} $<TARGET_OBJECTS:porta::${variant}_runtime>)
    target_link_libraries(${target} PRIVATE porta::headers ${CMAKE_DL_LIBS})
    target_include_directories(${target} PRIVATE ${includes})
    target_compile_definitions(${target} PRIVATE PORTA_SIMT)
    _porta_cpu_kernel_options(${target})
    set_target_properties(${target} PROPERTIES PREFIX "" OUTPUT_NAME ${name}.cpu-${variant}
                                               LINKER_LANGUAGE CXX)
    if(variant STREQUAL "simt")
      target_compile_options(${target} PRIVATE -O2)
    else()
      target_compile_options(${target} PRIVATE -O0 -g -fsanitize=thread
        $<$<CXX_COMPILER_ID:GNU>:--param=tsan-instrument-func-entry-exit=0>)
    endif()
    if(install_kernels)
      install(TARGETS ${target} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
    endif()
    add_dependencies(${name} ${target})
  endforeach()
endfunction()

# The GPU builds of a kernel library: custom commands running nvcc, hipcc and clang on one generated
# translation unit that includes every source.
function(_porta_add_gpu_kernels name sources includes)
  set(unity "${CMAKE_CURRENT_BINARY_DIR}/${name}.gpu.cpp")
  set(content "// Generated by porta_add_kernel_library: the GPU translation unit of ${name}.\n")
  set(depends "")
  foreach(source IN LISTS sources)
    get_filename_component(source "${source}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
    string(APPEND content "#include \"${source}\"\n")
    list(APPEND depends "${source}")
  endforeach()
  file(CONFIGURE OUTPUT "${unity}" CONTENT "${content}")
  # The public headers, in the tree or installed (one folder).
  set(flags -std=c++20 -O3 "-I$<TARGET_PROPERTY:porta::headers,INTERFACE_INCLUDE_DIRECTORIES>")
  foreach(dir IN LISTS includes)
    get_filename_component(dir "${dir}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
    list(APPEND flags "-I${dir}")
  endforeach()
  # Beside the CPU builds: where modules of this directory go.
  set(lib "${CMAKE_LIBRARY_OUTPUT_DIRECTORY}")
  if(NOT lib)
    set(lib "${CMAKE_CURRENT_BINARY_DIR}")
  endif()

  if(PORTA_BUILD_CUDA)
    set(out "${lib}/${name}.cuda.fatbin")
    set(depfile "${CMAKE_CURRENT_BINARY_DIR}/${name}.cuda.fatbin.d")
    # nvcc's intermediates (<name>.gpu.compute_<arch>.ptx among them) are kept here for the
    # resource checks (tests/gpu/check_kernel_resources.py), which run ptxas on the same PTX.
    set(keep "${CMAKE_CURRENT_BINARY_DIR}/${name}.cuda.keep")
    file(MAKE_DIRECTORY "${keep}")
    set_property(GLOBAL APPEND PROPERTY PORTA_CUDA_KERNEL_KEEP_DIRS "${keep}")
    set(gencode "")
    set(highest "")
    foreach(arch IN LISTS PORTA_CUDA_ARCHITECTURES)
      list(APPEND gencode -gencode arch=compute_${arch},code=sm_${arch})
      set(highest ${arch})
    endforeach()
    list(APPEND gencode -gencode arch=compute_${highest},code=compute_${highest})
    add_custom_command(
      OUTPUT "${out}"
      COMMAND "${PORTA_NVCC}" -x cu ${flags} --fatbin ${gencode} --keep --keep-dir "${keep}" -MD
              -MF "${depfile}" -o "${out}" "${unity}"
      DEPENDS "${unity}" ${depends}
      DEPFILE "${depfile}"
      COMMENT "Building CUDA code object ${name}.cuda.fatbin (${PORTA_CUDA_ARCHITECTURES})"
      VERBATIM)
    add_custom_target(${name}.cuda DEPENDS "${out}")
    add_dependencies(${name} ${name}.cuda)
    # The toolkit version the fatbin needs a driver for (see PortaGpuToolchains.cmake).
    file(CONFIGURE OUTPUT "${out}.toolkit" CONTENT "${PORTA_CUDA_TOOLKIT_VERSION}\n")
    if(install_kernels)
      install(FILES "${out}" "${out}.toolkit" DESTINATION ${CMAKE_INSTALL_LIBDIR})
    endif()
  endif()

  if(PORTA_BUILD_HIP)
    set(outputs "")
    foreach(arch IN LISTS PORTA_HIP_ARCHITECTURES)
      set(out "${lib}/${name}.hip-${arch}.hsaco")
      set(depfile "${CMAKE_CURRENT_BINARY_DIR}/${name}.hip-${arch}.hsaco.d")
      add_custom_command(
        OUTPUT "${out}"
        COMMAND "${PORTA_HIPCC}" -x hip ${flags} --offload-arch=${arch} --cuda-device-only
                --no-gpu-bundle-output -mcode-object-version=${PORTA_HIP_CODE_OBJECT_VERSION} -c
                -MD -MF "${depfile}" -o "${out}" "${unity}"
        DEPENDS "${unity}" ${depends}
        DEPFILE "${depfile}"
        COMMENT "Building HIP code object ${name}.hip-${arch}.hsaco"
        VERBATIM)
      list(APPEND outputs "${out}")
      set_property(GLOBAL APPEND PROPERTY PORTA_HIP_KERNEL_LIBRARIES "${lib}/${name}")
    endforeach()
    add_custom_target(${name}.hip DEPENDS ${outputs})
    add_dependencies(${name} ${name}.hip)
    if(install_kernels)
      install(FILES ${outputs} DESTINATION ${CMAKE_INSTALL_LIBDIR})
    endif()
  endif()

  if(PORTA_BUILD_SPIRV)
    # clang without LLVM's passes, then opt-15 with the pass step around -O3 (no vectorising: the
    # work-items are the vector lanes, and llvm-spirv-15 cannot take vector reductions).
    set(bitcode "${CMAKE_CURRENT_BINARY_DIR}/${name}.spirv.bc")
    set(prepared "${CMAKE_CURRENT_BINARY_DIR}/${name}.spirv.opt.bc")
    set(spv "${lib}/${name}.spv")
    set(spir "${lib}/${name}.spir.bc")
    set(depfile "${CMAKE_CURRENT_BINARY_DIR}/${name}.spv.d")
    add_custom_command(
      OUTPUT "${spv}" "${spir}"
      COMMAND "${PORTA_SPIRV_CLANG}" -x hip --offload=spirv64 --cuda-device-only -nogpulib
              -nogpuinc ${flags} -Xclang -disable-llvm-passes -emit-llvm -c -MD -MF "${depfile}"
              -MT "${spv}" -o "${bitcode}" "${unity}"
      COMMAND "${PORTA_SPIRV_OPT}" -opaque-pointers=0
              "-load-pass-plugin=$<TARGET_FILE:porta::spirv_passes>"
              "-passes=porta-spirv-internalize,default<O3>,porta-spirv-lower"
              --vectorize-loops=false --vectorize-slp=false -o "${prepared}" "${bitcode}"
      COMMAND "${PORTA_SPIRV_TRANSLATOR}" --spirv-max-version=1.2 -o "${spv}" "${prepared}"
      COMMAND "${PORTA_SPIRV_VAL}" --target-env opencl2.2 "${spv}"
      COMMAND "${PORTA_SPIRV_TRANSLATOR}" -r --spirv-target-env=CL1.2 -o "${spir}" "${spv}"
      DEPENDS "${unity}" ${depends} porta::spirv_passes
      DEPFILE "${depfile}"
      COMMENT "Building SPIR-V code objects ${name}.spv and ${name}.spir.bc"
      VERBATIM)
    add_custom_target(${name}.spirv DEPENDS "${spv}" "${spir}")
    add_dependencies(${name} ${name}.spirv)
    if(install_kernels)
      install(FILES "${spv}" "${spir}" DESTINATION ${CMAKE_INSTALL_LIBDIR})
    endif()
    set_property(GLOBAL APPEND PROPERTY PORTA_SPIRV_LIBRARIES "${spv}")
  endif()
endfunction()
