// What the fuzz targets share: a property check that stops the run loudly,
// and the rule for exceptions. A payq::Error of an expected type is an
// answer; any other exception is a finding.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <typeinfo>

// A broken property: print what and where, then abort so libFuzzer saves
// the input as a crash.
#define PAYQ_FUZZ_CHECK(condition, message)                                                          \
  do {                                                                                               \
    if (!(condition)) {                                                                              \
      std::fprintf(stderr, "\nPROPERTY FAILED at %s:%d: %s\n  %s\n", __FILE__, __LINE__, #condition, \
                   std::string(message).c_str());                                                    \
      std::abort();                                                                                  \
    }                                                                                                \
  } while (false)

namespace payq::fuzz {

// For a catch (...) after the expected types: reports the exception in
// flight, whatever it is, and aborts.
[[noreturn]] inline void unexpected_exception(const char* where) {
  try {
    throw;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nUNEXPECTED EXCEPTION in %s: %s: %s\n", where, typeid(e).name(), e.what());
  } catch (...) {
    std::fprintf(stderr, "\nUNEXPECTED EXCEPTION in %s: not a std::exception\n", where);
  }
  std::abort();
}

// Printable for messages: control and non-ASCII bytes as \xNN.
inline std::string printable(const std::string& text) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : text) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out += "\\x";
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 0x0f]);
    }
  }
  return out;
}

}  // namespace payq::fuzz
