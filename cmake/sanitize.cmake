# PAYQ_SANITIZE (see the top-level CMakeLists.txt): instruments a target's own
# code and links the sanitizer runtimes. Used by tools/sanitize.
set(PAYQ_SANITIZE_FLAGS "")
if(PAYQ_SANITIZE)
  string(REPLACE "," ";" payq_sanitizers "${PAYQ_SANITIZE}")
  foreach(sanitizer IN LISTS payq_sanitizers)
    if(NOT sanitizer MATCHES "^(address|undefined|thread)$")
      message(FATAL_ERROR "PAYQ_SANITIZE: unknown sanitizer '${sanitizer}' (address, undefined, thread)")
    endif()
  endforeach()
  if("thread" IN_LIST payq_sanitizers AND "address" IN_LIST payq_sanitizers)
    message(FATAL_ERROR "PAYQ_SANITIZE: thread and address cannot be combined; build them separately")
  endif()
  # Frame pointers give whole stacks in reports at -O1; a UBSan report
  # aborts instead of printing and carrying on, so the run fails.
  set(PAYQ_SANITIZE_FLAGS -fsanitize=${PAYQ_SANITIZE} -fno-omit-frame-pointer)
  if("undefined" IN_LIST payq_sanitizers)
    list(APPEND PAYQ_SANITIZE_FLAGS -fno-sanitize-recover=all)
  endif()
  message(STATUS "payq: sanitizers ${PAYQ_SANITIZE}")
endif()

function(payq_sanitize target)
  if(NOT PAYQ_SANITIZE_FLAGS)
    return()
  endif()
  target_compile_options(${target} PRIVATE ${PAYQ_SANITIZE_FLAGS})
  # PUBLIC on the core: whatever links it (the tests, the Python module)
  # links the runtimes too.
  target_link_options(${target} PUBLIC ${PAYQ_SANITIZE_FLAGS})
endfunction()
