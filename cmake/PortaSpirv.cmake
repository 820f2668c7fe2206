# The SPIR-V side of the build: the OpenCL and Level Zero backends, and the toolchain that turns
# kernel libraries into SPIR-V (see PortaKernelLibrary.cmake). Sets:
#   PORTA_BUILD_OPENCL, PORTA_OPENCL_INCLUDE_DIR      the OpenCL backend (CL/cl.h)
#   PORTA_BUILD_LEVEL_ZERO, PORTA_LEVEL_ZERO_INCLUDE_DIR  the Level Zero backend (ze_api.h)
#   PORTA_BUILD_SPIRV, PORTA_SPIRV_CLANG, _OPT, _TRANSLATOR, _VAL, _DIS: kernel libraries' .spv
#     (validated by spirv-val) and .spir.bc (SPIR 1.2, for drivers that take no SPIR-V)
#   PORTA_OCLOC: Intel's offline compiler, for the test that every library builds for Intel GPUs
# Both plugins open their driver at run time, so building them needs headers only. Configure
# says in one line what is built and why not; ON makes a missing piece an error.

function(_porta_spirv_missing option what)
  string(CONCAT why ${ARGN})
  if(${option} STREQUAL "ON")
    message(FATAL_ERROR "${option}=ON but ${why}")
  endif()
  message(STATUS "Porta: ${what} not built: ${why}")
endfunction()

set(PORTA_BUILD_OPENCL FALSE)
if(NOT PORTA_BACKEND_OPENCL STREQUAL "OFF")
  find_path(PORTA_OPENCL_INCLUDE_DIR CL/cl.h)
  if(PORTA_OPENCL_INCLUDE_DIR)
    set(PORTA_BUILD_OPENCL TRUE)
    message(STATUS "Porta: OpenCL backend: CL/cl.h in ${PORTA_OPENCL_INCLUDE_DIR}")
  else()
    _porta_spirv_missing(PORTA_BACKEND_OPENCL "OpenCL backend"
                         "CL/cl.h was not found (Debian: opencl-c-headers)")
  endif()
endif()

set(PORTA_BUILD_LEVEL_ZERO FALSE)
if(NOT PORTA_BACKEND_LEVEL_ZERO STREQUAL "OFF")
  find_path(PORTA_LEVEL_ZERO_INCLUDE_DIR level_zero/ze_api.h)
  if(PORTA_LEVEL_ZERO_INCLUDE_DIR)
    set(PORTA_BUILD_LEVEL_ZERO TRUE)
    message(STATUS "Porta: Level Zero backend: ze_api.h in ${PORTA_LEVEL_ZERO_INCLUDE_DIR}")
  else()
    _porta_spirv_missing(PORTA_BACKEND_LEVEL_ZERO "Level Zero backend"
                         "level_zero/ze_api.h was not found (Debian: libze-dev)")
  endif()
endif()

# The kernel toolchain (PortaSpirvToolchain.cmake), and the LLVM 15 headers its pass plugin is
# built against.
include(PortaSpirvToolchain)
set(PORTA_BUILD_SPIRV FALSE)
if(PORTA_BUILD_OPENCL OR PORTA_BUILD_LEVEL_ZERO)
  porta_find_spirv_toolchain(missing)
  find_path(PORTA_LLVM15_INCLUDE_DIR llvm/Passes/PassPlugin.h PATHS /usr/lib/llvm-15/include
            NO_DEFAULT_PATH)
  if(NOT PORTA_LLVM15_INCLUDE_DIR)
    list(APPEND missing "the LLVM 15 headers (Debian: llvm-15-dev)")
  endif()
  if(missing)
    list(JOIN missing ", " missing)
    message(STATUS "Porta: SPIR-V kernel libraries not built: missing ${missing}; the OpenCL "
                   "and Level Zero backends then have no portable ops")
  else()
    set(PORTA_BUILD_SPIRV TRUE)
    message(STATUS "Porta: SPIR-V kernel libraries: <lib>.spv (${PORTA_SPIRV_TRANSLATOR}, "
                   "checked by spirv-val) and <lib>.spir.bc (SPIR 1.2)")
    # The pass step's plugin. It runs inside opt-15, which provides LLVM's symbols; LLVM is built
    # without RTTI, so the plugin is too.
    add_library(porta_spirv_passes MODULE "${CMAKE_CURRENT_LIST_DIR}/spirv/spirv_passes.cpp")
    target_include_directories(porta_spirv_passes SYSTEM PRIVATE ${PORTA_LLVM15_INCLUDE_DIR})
    target_compile_definitions(porta_spirv_passes PRIVATE _GNU_SOURCE __STDC_CONSTANT_MACROS
                               __STDC_FORMAT_MACROS __STDC_LIMIT_MACROS)
    # No sanitizer either: the plugin runs inside opt-15, which has no sanitizer runtime.
    target_compile_options(porta_spirv_passes PRIVATE -fno-rtti -fno-exceptions -fno-sanitize=all)
    target_link_options(porta_spirv_passes PRIVATE -fno-sanitize=all)
    set_target_properties(porta_spirv_passes PROPERTIES
      CXX_STANDARD 17 PREFIX "lib" CXX_VISIBILITY_PRESET default
      LIBRARY_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/spirv")
    # Installed for kernel libraries built against an installed Porta (porta::spirv_passes).
    add_library(porta::spirv_passes ALIAS porta_spirv_passes)
    set_target_properties(porta_spirv_passes PROPERTIES EXPORT_NAME spirv_passes)
    install(TARGETS porta_spirv_passes EXPORT porta-targets
            LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}/porta)
  endif()
else()
  message(STATUS "Porta: SPIR-V kernel libraries not built: neither the OpenCL nor the Level Zero "
                 "backend is built")
endif()

find_program(PORTA_OCLOC NAMES ocloc)
if(PORTA_BUILD_SPIRV AND PORTA_OCLOC)
  message(STATUS "Porta: ocloc found (${PORTA_OCLOC}): kernel libraries are test-compiled for "
                 "Intel GPUs")
elseif(PORTA_BUILD_SPIRV)
  message(STATUS "Porta: no ocloc: the Intel GPU compile test is left out (Debian: "
                 "intel-opencl-icd)")
endif()
