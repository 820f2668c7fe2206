# porta-microbench's dependencies, included by tools/CMakeLists.txt. Google Benchmark is required
# (Debian: libbenchmark-dev). The baselines are optional: each one found adds its benchmarks; one
# missing is said here and by the program at run time, never left out silently;
# -DCMAKE_DISABLE_FIND_PACKAGE_OpenBLAS=ON or -DCMAKE_DISABLE_FIND_PACKAGE_dnnl=ON leaves one out
# on purpose. Sets
#   PORTA_MICROBENCH_LIBRARIES    what porta-microbench links besides libporta
#   PORTA_MICROBENCH_DEFINITIONS  PORTA_MICROBENCH_HAVE_{OPENBLAS,DNNL,OPENMP}, and the reason a
#                                 baseline is missing
#   PORTA_BASELINE_DNNL           oneDNN's target, or "" (then PORTA_BASELINE_DNNL_MISSING says why)
find_package(benchmark REQUIRED)
set(PORTA_MICROBENCH_LIBRARIES benchmark::benchmark)
set(PORTA_MICROBENCH_DEFINITIONS "")

# ---- OpenBLAS: pkg-config's openblas (Debian: cblas.h in /usr/include/<triplet>/openblas-pthread),
# else OpenBLAS's own CMake package. openblas_set_num_threads must be there too.
set(_openblas "")
set(_openblas_missing
    "OpenBLAS not found (pkg-config openblas, OpenBLASConfig.cmake; Debian: libopenblas-dev)")
if(CMAKE_DISABLE_FIND_PACKAGE_OpenBLAS)
  set(_openblas_missing "OpenBLAS disabled by CMAKE_DISABLE_FIND_PACKAGE_OpenBLAS")
else()
  find_package(PkgConfig QUIET)
endif()
if(PKG_CONFIG_FOUND AND NOT CMAKE_DISABLE_FIND_PACKAGE_OpenBLAS)
  pkg_check_modules(PORTA_MICROBENCH_OPENBLAS QUIET IMPORTED_TARGET openblas)
  if(PORTA_MICROBENCH_OPENBLAS_FOUND)
    set(_openblas PkgConfig::PORTA_MICROBENCH_OPENBLAS)
  endif()
endif()
if(NOT _openblas AND NOT CMAKE_DISABLE_FIND_PACKAGE_OpenBLAS)
  find_package(OpenBLAS CONFIG QUIET)
  if(OpenBLAS_FOUND)
    add_library(porta_microbench_openblas INTERFACE)
    target_include_directories(porta_microbench_openblas INTERFACE ${OpenBLAS_INCLUDE_DIRS})
    target_link_libraries(porta_microbench_openblas INTERFACE ${OpenBLAS_LIBRARIES})
    set(_openblas porta_microbench_openblas)
  endif()
endif()
if(_openblas)
  include(CheckCXXSymbolExists)
  set(CMAKE_REQUIRED_LIBRARIES ${_openblas})
  set(CMAKE_REQUIRED_QUIET ON)
  check_cxx_symbol_exists(openblas_set_num_threads cblas.h PORTA_MICROBENCH_OPENBLAS_USABLE)
  unset(CMAKE_REQUIRED_LIBRARIES)
  unset(CMAKE_REQUIRED_QUIET)
  if(NOT PORTA_MICROBENCH_OPENBLAS_USABLE)
    set(_openblas_missing "OpenBLAS's cblas.h does not declare openblas_set_num_threads")
    set(_openblas "")
  endif()
endif()
if(_openblas)
  message(STATUS "porta-microbench: OpenBLAS baseline: ${_openblas}")
  list(APPEND PORTA_MICROBENCH_LIBRARIES ${_openblas})
  list(APPEND PORTA_MICROBENCH_DEFINITIONS PORTA_MICROBENCH_HAVE_OPENBLAS=1)
else()
  message(WARNING "porta-microbench: building without the OpenBLAS baseline: ${_openblas_missing}")
  list(APPEND PORTA_MICROBENCH_DEFINITIONS
       "PORTA_MICROBENCH_OPENBLAS_MISSING=\"${_openblas_missing}\"")
endif()

# ---- oneDNN 2.x: its CMake package (DNNL::dnnl). Debian's dnnl-config.cmake has
# find_package(OpenCL REQUIRED) (its GPU runtime is OpenCL), which would stop the whole
# configuration without OpenCL's development files: ask for it only when OpenCL is there, else
# find the header and library directly.
set(_dnnl "")
set(_dnnl_missing
    "oneDNN not found (dnnl CMake package, oneapi/dnnl/dnnl.hpp, libdnnl; Debian: libdnnl-dev)")
if(CMAKE_DISABLE_FIND_PACKAGE_dnnl)
  set(_dnnl_missing "oneDNN disabled by CMAKE_DISABLE_FIND_PACKAGE_dnnl")
else()
  find_package(OpenCL QUIET)
endif()
if(OpenCL_FOUND)
  find_package(dnnl 2 CONFIG QUIET)
endif()
if(TARGET DNNL::dnnl)
  set(_dnnl DNNL::dnnl)
elseif(NOT CMAKE_DISABLE_FIND_PACKAGE_dnnl)
  find_path(PORTA_MICROBENCH_DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.hpp)
  find_library(PORTA_MICROBENCH_DNNL_LIBRARY dnnl)
  if(PORTA_MICROBENCH_DNNL_INCLUDE_DIR AND PORTA_MICROBENCH_DNNL_LIBRARY)
    add_library(porta_microbench_dnnl INTERFACE)
    target_include_directories(porta_microbench_dnnl INTERFACE ${PORTA_MICROBENCH_DNNL_INCLUDE_DIR})
    target_link_libraries(porta_microbench_dnnl INTERFACE ${PORTA_MICROBENCH_DNNL_LIBRARY})
    set(_dnnl porta_microbench_dnnl)
  endif()
endif()
if(_dnnl)
  message(STATUS "porta-microbench: oneDNN baseline: ${_dnnl}")
  list(APPEND PORTA_MICROBENCH_LIBRARIES ${_dnnl})
  list(APPEND PORTA_MICROBENCH_DEFINITIONS PORTA_MICROBENCH_HAVE_DNNL=1)
  # Debian's oneDNN runs on OpenMP: omp_set_num_threads gives it Porta's thread count.
  find_package(OpenMP COMPONENTS CXX QUIET)
  if(OpenMP_CXX_FOUND)
    list(APPEND PORTA_MICROBENCH_LIBRARIES OpenMP::OpenMP_CXX)
    list(APPEND PORTA_MICROBENCH_DEFINITIONS PORTA_MICROBENCH_HAVE_OPENMP=1)
  else()
    message(WARNING "porta-microbench: OpenMP not found: oneDNN keeps its default thread count")
  endif()
else()
  message(WARNING "porta-microbench: building without the oneDNN baseline: ${_dnnl_missing}")
  list(APPEND PORTA_MICROBENCH_DEFINITIONS "PORTA_MICROBENCH_DNNL_MISSING=\"${_dnnl_missing}\"")
endif()
# porta-bench's onednn-blocked rows use the same oneDNN (with OpenMP), or say why they are absent.
set(PORTA_BASELINE_DNNL "${_dnnl}")
set(PORTA_BASELINE_DNNL_MISSING "${_dnnl_missing}")
