# Embeds the numbered migrations of cpp/sql/ into the library, so nothing
# but the library itself is needed at run time.
function(payq_embed_sql output)
  set(sql_files ${ARGN})
  list(SORT sql_files)
  add_custom_command(
    OUTPUT ${output}
    COMMAND ${CMAKE_COMMAND} -DOUTPUT=${output} "-DINPUTS=${sql_files}"
            -P ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/embed_sql_run.cmake
    DEPENDS ${sql_files} ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/embed_sql_run.cmake
    COMMENT "Embedding SQL migrations"
    VERBATIM)
endfunction()
