# The programs that turn kernel libraries into SPIR-V (see PortaKernelLibrary.cmake): clang 15
# compiles the dialect's GPU branch as HIP for spirv64 (no HIP install needed), opt-15 runs
# Porta's pass plugin (porta::spirv_passes), llvm-spirv-15 translates (and back to SPIR 1.2),
# spirv-val checks, spirv-dis serves the tests. Porta's build (PortaSpirv.cmake) and an installed
# Porta (porta-config.cmake) both find them here.
# porta_find_spirv_toolchain(<out>): sets PORTA_SPIRV_CLANG, _OPT, _TRANSLATOR, _VAL and _DIS, and
# <out> to what is missing, in words with the Debian package ("" when all are found).
function(porta_find_spirv_toolchain out)
  find_program(PORTA_SPIRV_CLANG NAMES clang++-15 PATHS /usr/lib/llvm-15/bin)
  find_program(PORTA_SPIRV_OPT NAMES opt-15 PATHS /usr/lib/llvm-15/bin)
  find_program(PORTA_SPIRV_TRANSLATOR NAMES llvm-spirv-15 PATHS /usr/lib/llvm-15/bin)
  find_program(PORTA_SPIRV_VAL NAMES spirv-val)
  find_program(PORTA_SPIRV_DIS NAMES spirv-dis)
  set(missing "")
  foreach(entry IN ITEMS "PORTA_SPIRV_CLANG:clang++-15 (Debian: clang-15)"
                         "PORTA_SPIRV_OPT:opt-15 (Debian: llvm-15)"
                         "PORTA_SPIRV_TRANSLATOR:llvm-spirv-15 (Debian: llvm-spirv-15)"
                         "PORTA_SPIRV_VAL:spirv-val (Debian: spirv-tools)"
                         "PORTA_SPIRV_DIS:spirv-dis (Debian: spirv-tools)")
    string(REPLACE ":" ";" parts "${entry}")
    list(GET parts 0 variable)
    list(GET parts 1 label)
    if(NOT ${variable})
      list(APPEND missing "${label}")
    endif()
  endforeach()
  set(${out} "${missing}" PARENT_SCOPE)
endfunction()
