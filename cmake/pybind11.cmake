# Python and pybind11 for the binding (bindings/) and the application-
# connection executor (cpp/appconn/), found once for both.
find_package(Python 3.9 COMPONENTS Interpreter Development.Module REQUIRED)
find_package(pybind11 CONFIG QUIET)
if(NOT pybind11_FOUND)
  # pybind11 comes from PyPI; ask the interpreter where it keeps its CMake files.
  execute_process(COMMAND ${Python_EXECUTABLE} -m pybind11 --cmakedir
    OUTPUT_VARIABLE pybind11_DIR OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE pybind11_status)
  if(NOT pybind11_status EQUAL 0)
    message(FATAL_ERROR "pybind11 not found: pip install pybind11 (or build with pip install .)")
  endif()
  find_package(pybind11 CONFIG REQUIRED)
endif()
