# System dependencies, all from Debian 12 packages. A missing one stops the
# configure step with the name of the package that provides it.
find_package(PkgConfig QUIET)
if(NOT PkgConfig_FOUND)
  message(FATAL_ERROR "pkg-config not found: apt-get install pkg-config")
endif()

macro(payq_require_pkg target module debian_package)
  if(NOT TARGET PkgConfig::${target})
    pkg_check_modules(${target} QUIET IMPORTED_TARGET ${module})
    if(NOT ${target}_FOUND)
      message(FATAL_ERROR "${module} not found: apt-get install ${debian_package}")
    endif()
  endif()
endmacro()

payq_require_pkg(PQXX "libpqxx>=6.4" libpqxx-dev)
payq_require_pkg(PQ libpq libpq-dev)

find_package(nlohmann_json 3.9 QUIET)
if(NOT nlohmann_json_FOUND)
  message(FATAL_ERROR "nlohmann_json not found: apt-get install nlohmann-json3-dev")
endif()

find_package(CURL QUIET)
if(NOT CURL_FOUND)
  message(FATAL_ERROR "libcurl not found: apt-get install libcurl4-openssl-dev")
endif()

set(THREADS_PREFER_PTHREAD_FLAG ON)
find_package(Threads REQUIRED)
