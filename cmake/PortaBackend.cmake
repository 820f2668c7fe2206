# porta_add_backend(<name> SOURCES ... [LIBRARIES ...] [INCLUDES ...])
# Builds libporta_<name>.so, a dlopen-able backend plugin, next to libporta. A plugin links only
# the public headers: it reaches libporta through the host API it is handed, never by symbol.
function(porta_add_backend name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBRARIES;INCLUDES" ${ARGN})
  set(target porta_${name})
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE porta::headers porta::plugin_kit ${ARG_LIBRARIES})
  target_include_directories(${target} PRIVATE ${ARG_INCLUDES})
  set_target_properties(${target} PROPERTIES PREFIX "lib" OUTPUT_NAME porta_${name})
  porta_link_as_plugin(${target})
  install(TARGETS ${target} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  set_property(GLOBAL APPEND PROPERTY PORTA_BUILT_BACKENDS ${name})
endfunction()

# porta_link_as_plugin(<target>): what every plugin's link shares. No undefined symbols, and the
# entry point as the only export (plugin_exports.map); the target joins PORTA_BUILT_PLUGINS, which
# the tests check with nm.
function(porta_link_as_plugin target)
  set(map "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/plugin_exports.map")  # installed beside this file
  target_link_options(${target} PRIVATE -Wl,--no-undefined "-Wl,--version-script=${map}")
  set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS "${map}")
  set_property(GLOBAL APPEND PROPERTY PORTA_BUILT_PLUGINS ${target})
endfunction()
