# Writes OUT with the source tree's `git describe --always --dirty`, only when it changed (so that a
# build that changes nothing recompiles nothing). Run at every build by the sdrt_git_revision target.
execute_process(COMMAND git describe --always --dirty WORKING_DIRECTORY "${SRC}" OUTPUT_VARIABLE REV OUTPUT_STRIP_TRAILING_WHITESPACE
                ERROR_QUIET)
if(NOT REV AND DEFINED ENV{SDRT_GIT_REVISION})  # a tree without .git (a container build) can be told
  set(REV "$ENV{SDRT_GIT_REVISION}")
endif()
if(NOT REV)
  set(REV unknown)
endif()
set(CONTENT "#define SDRT_GIT_REVISION \"${REV}\"\n")
set(OLD "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" OLD)
endif()
if(NOT OLD STREQUAL CONTENT)
  file(WRITE "${OUT}" "${CONTENT}")
endif()
