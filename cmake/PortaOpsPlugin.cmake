# porta_add_ops_plugin(<name> SOURCES ... [LIBRARIES ...])
# Builds libporta_ops_<name>.so, an op plugin, next to libporta. Unlike a backend it links
# libporta: it launches its kernels through the public API, as any user's kernel library does.
# Like a backend it links porta_plugin_kit (plugin_kit/) privately.
function(porta_add_ops_plugin name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBRARIES" ${ARGN})
  set(target porta_ops_${name})
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE porta::porta porta::plugin_kit ${ARG_LIBRARIES})
  set_target_properties(${target} PROPERTIES PREFIX "lib" OUTPUT_NAME porta_ops_${name}
                                             INSTALL_RPATH "$ORIGIN")
  porta_link_as_plugin(${target})
  install(TARGETS ${target} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endfunction()
