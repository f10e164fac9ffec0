# payq's build dependencies (Debian 12 packages in tools/run). Every missing
# one is collected first and then named in one message, with the Debian
# package and the library's generic name, so that a source build from the
# sdist tells the user everything to install in one try.
# The installed package config (payqConfig.cmake) does not include this
# file: there a missing dependency makes payq_FOUND false instead.
set(PAYQ_MISSING_DEPENDENCIES "")

# what: the library's generic name; debian: the Debian/Ubuntu -dev package.
function(payq_dependency_missing what debian)
  set(PAYQ_MISSING_DEPENDENCIES "${PAYQ_MISSING_DEPENDENCIES}\n  ${what}: apt-get install ${debian}"
      PARENT_SCOPE)
endfunction()

find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  foreach(spec "PQXX;libpqxx>=6.4;libpqxx (C++ client for PostgreSQL, 6.4 or newer);libpqxx-dev"
               "PQ;libpq;libpq (PostgreSQL C client library);libpq-dev")
    list(GET spec 0 target)
    list(GET spec 1 module)
    list(GET spec 2 what)
    list(GET spec 3 debian)
    if(NOT TARGET PkgConfig::${target})
      pkg_check_modules(${target} QUIET IMPORTED_TARGET ${module})
      if(NOT ${target}_FOUND)
        payq_dependency_missing("${what}" ${debian})
      endif()
    endif()
  endforeach()
else()
  payq_dependency_missing("pkg-config (finds libpqxx and libpq)" pkg-config)
endif()

find_package(nlohmann_json 3.9 QUIET)
if(NOT nlohmann_json_FOUND)
  payq_dependency_missing("nlohmann_json (JSON for Modern C++, 3.9 or newer)" nlohmann-json3-dev)
endif()

find_package(CURL QUIET)
if(NOT CURL_FOUND)
  payq_dependency_missing("libcurl (with OpenSSL)" libcurl4-openssl-dev)
endif()

# AES-256-GCM for encrypted task payloads (keyring.hpp).
find_package(OpenSSL 1.1 QUIET COMPONENTS Crypto)
if(NOT OpenSSL_FOUND)
  payq_dependency_missing("OpenSSL libcrypto (1.1 or newer)" libssl-dev)
endif()

if(PAYQ_MISSING_DEPENDENCIES)
  message(FATAL_ERROR "payq cannot be built: missing libraries (on other distributions install the "
                      "same library's development package; pkg-config, CMAKE_PREFIX_PATH or "
                      "PKG_CONFIG_PATH must find it):${PAYQ_MISSING_DEPENDENCIES}")
endif()

set(THREADS_PREFER_PTHREAD_FLAG ON)
find_package(Threads REQUIRED)
