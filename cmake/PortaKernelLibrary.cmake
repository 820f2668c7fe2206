# porta_add_kernel_library(<name> SOURCES ... [INCLUDES ...])
# Compiles kernels written in the portable dialect (include/porta/porta_kernel.h) once for every
# target the build has, into lib/:
#   CPU: <name>.cpu-<level>.so for each instruction-set level in PORTA_CPU_KERNEL_LEVELS, so that
#        the compiler vectorises for AVX-512 where the host has it and for AVX2 or SSE2 elsewhere.
# porta_module_load(device, "lib/<name>") picks the build that fits the device.
# The target <name> builds them all.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(PORTA_CPU_KERNEL_LEVELS "x86-64;x86-64-v3;x86-64-v4" CACHE STRING
      "CPU instruction-set levels kernel libraries are built for")
else()
  set(PORTA_CPU_KERNEL_LEVELS "native" CACHE STRING
      "CPU instruction-set levels kernel libraries are built for")
endif()

function(porta_add_kernel_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;INCLUDES" ${ARGN})
  add_custom_target(${name})
  if(TARGET porta_cpu)
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
      # Kernels are leaf code: no exceptions cross them, and errno is never read.
      target_compile_options(${target} PRIVATE -fno-exceptions -fno-math-errno)
      install(TARGETS ${target} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
      add_dependencies(${name} ${target})
    endforeach()
  endif()
endfunction()
