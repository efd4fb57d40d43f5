# Builds each probe target (a file that includes a folder its layer may not use, compiled with that
# layer's include directories and usage requirements) and passes only if every build fails because
# the forbidden header is not found.
#   cmake -DBUILD_DIR=<build tree> "-DPROBES=target=header;..." -P check_layering.cmake
foreach(probe ${PROBES})
  string(REPLACE "=" ";" parts ${probe})
  list(GET parts 0 target)
  list(GET parts 1 header)
  execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target ${target}
                  RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(REGEX REPLACE "([.+])" "\\\\\\1" header_re "${header}")
  if(result EQUAL 0)
    message(FATAL_ERROR "${target} compiled: the include of ${header} was not refused")
  elseif(NOT "${out}${err}" MATCHES "${header_re}: No such file or directory")
    message(FATAL_ERROR "${target} failed for another reason than a missing ${header}:\n${out}${err}")
  endif()
  message(STATUS "${target}: ${header} refused, as it should be")
endforeach()
