# Build options. A backend option is AUTO (built when its toolchain is found), ON (required) or OFF.
foreach(backend CPU CUDA HIP LEVEL_ZERO OPENCL)
  set(PORTA_BACKEND_${backend} AUTO CACHE STRING "Build the ${backend} backend plugin: AUTO, ON or OFF")
  set_property(CACHE PORTA_BACKEND_${backend} PROPERTY STRINGS AUTO ON OFF)
  if(NOT PORTA_BACKEND_${backend} MATCHES "^(AUTO|ON|OFF)$")
    message(FATAL_ERROR "PORTA_BACKEND_${backend}='${PORTA_BACKEND_${backend}}': use AUTO, ON or OFF")
  endif()
endforeach()

option(PORTA_BUILD_TESTS "Build the test suites" ON)
option(PORTA_BUILD_TOOLS "Build porta-info and the other tools" ON)

set(PORTA_SANITIZE "" CACHE STRING
    "Build with sanitizers: address, undefined, thread, a comma list (address,undefined), or empty")
set_property(CACHE PORTA_SANITIZE PROPERTY STRINGS "" address undefined "address,undefined" thread)
if(PORTA_SANITIZE)
  if(NOT PORTA_SANITIZE MATCHES "^(address|undefined|thread)(,(address|undefined))*$"
     OR (PORTA_SANITIZE MATCHES "thread" AND PORTA_SANITIZE MATCHES ","))
    message(FATAL_ERROR "PORTA_SANITIZE='${PORTA_SANITIZE}': use address, undefined, "
                        "address,undefined or thread")
  endif()
  add_compile_options(-fsanitize=${PORTA_SANITIZE} -fno-omit-frame-pointer -g)
  add_link_options(-fsanitize=${PORTA_SANITIZE})
  if(PORTA_SANITIZE MATCHES "undefined")
    add_compile_options(-fno-sanitize-recover=undefined)
  endif()
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    # Clang links its sanitizer runtime into executables only: shared libraries, which are
    # linked with --no-undefined here, take the shared runtime, found through the rpath.
    add_link_options(-shared-libsan)
    execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-runtime-dir
                    OUTPUT_VARIABLE _porta_sanitizer_dir OUTPUT_STRIP_TRAILING_WHITESPACE)
    add_link_options(-Wl,-rpath,${_porta_sanitizer_dir})
  endif()
endif()

# libFuzzer targets (tests/fuzz): clang only. Everything is built with coverage for the fuzzer;
# combine with PORTA_SANITIZE=address,undefined.
option(PORTA_BUILD_FUZZERS "Build the libFuzzer targets (clang)" OFF)
if(PORTA_BUILD_FUZZERS)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "PORTA_BUILD_FUZZERS needs clang (e.g. CC=clang-15 CXX=clang++-15)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link)
  # libFuzzer keeps the coverage counters of every instrumented library it has seen and clears
  # them before each input: a plugin or kernel library that dlclose unmapped would be written
  # to. Libraries stay mapped once loaded.
  string(APPEND CMAKE_SHARED_LINKER_FLAGS " -Wl,-z,nodelete")
  string(APPEND CMAKE_MODULE_LINKER_FLAGS " -Wl,-z,nodelete")
endif()

# spdlog and fmt are used header-only and never appear in an exported symbol.
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
add_library(porta_logging_deps INTERFACE)
get_target_property(_spdlog_includes spdlog::spdlog_header_only INTERFACE_INCLUDE_DIRECTORIES)
target_include_directories(porta_logging_deps SYSTEM INTERFACE ${_spdlog_includes})
target_compile_definitions(porta_logging_deps INTERFACE SPDLOG_FMT_EXTERNAL)
target_link_libraries(porta_logging_deps INTERFACE fmt::fmt-header-only Threads::Threads)
find_package(Threads REQUIRED)
