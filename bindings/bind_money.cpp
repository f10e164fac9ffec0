// Money: checked int64 conversion of Python ints, then straight calls into
// payq/money.hpp and payq/currency.hpp. Python's payq.money adds the types.
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bind.hpp"
#include "payq/currency.hpp"
#include "payq/error.hpp"
#include "payq/money.hpp"

namespace payq::bindings {
namespace {

// A Python int to int64, as the payq error `E` when it is not an int (bool
// included) or does not fit. pybind11's own caster would raise TypeError
// for a big int; payq promises InvalidAmount.
template <class E>
std::int64_t int64_from(py::handle value, const char* what) {
  if (PyBool_Check(value.ptr()) || !PyLong_Check(value.ptr())) {
    throw E(std::string(what) + " must be an int, not " + std::string(py::str(py::type::handle_of(value).attr("__name__"))));
  }
  int overflow = 0;
  const long long result = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (overflow != 0) throw E(std::string(what) + " does not fit in 64 bits");
  if (result == -1 && PyErr_Occurred()) throw py::error_already_set();
  return result;
}

std::int64_t amount_from(py::handle value) { return int64_from<InvalidAmount>(value, "amount"); }

// Range-checked here too, before the narrowing to int, so an exponent like
// 2**40 is reported as itself rather than as whatever its low bits are.
int exponent_from(py::handle value) {
  const std::int64_t exponent = int64_from<InvalidArgument>(value, "currency exponent");
  if (exponent < 0 || exponent > amount_exponent_max) {
    throw InvalidArgument("currency exponent must be 0.." + std::to_string(amount_exponent_max) + ", got " +
                          std::to_string(exponent));
  }
  return static_cast<int>(exponent);
}

std::optional<std::int64_t> bound_from(py::handle value, const char* what) {
  if (value.is_none()) return std::nullopt;
  return int64_from<InvalidAmount>(value, what);
}

}  // namespace

void bind_money(py::module_& m) {
  m.def(
      "amount_parse",
      [](std::string_view text, py::handle exponent) { return amount_parse(text, exponent_from(exponent)); },
      py::arg("text"), py::arg("exponent"));
  m.def(
      "amount_format", [](py::handle amount, py::handle exponent) {
        return amount_format(amount_from(amount), exponent_from(exponent));
      },
      py::arg("amount_minor"), py::arg("exponent"));
  m.def(
      "amount_add", [](py::handle a, py::handle b) { return amount_add(amount_from(a), amount_from(b)); },
      py::arg("a_minor"), py::arg("b_minor"));
  m.def(
      "amount_sub", [](py::handle a, py::handle b) { return amount_sub(amount_from(a), amount_from(b)); },
      py::arg("a_minor"), py::arg("b_minor"));
  m.def(
      "amount_neg", [](py::handle amount) { return amount_neg(amount_from(amount)); }, py::arg("amount_minor"));
  m.def(
      "amount_mul_div",
      [](py::handle amount, py::handle numerator, py::handle denominator, const std::string& rounding) {
        return amount_mul_div(amount_from(amount), int64_from<InvalidArgument>(numerator, "numerator"),
                              int64_from<InvalidArgument>(denominator, "denominator"), rounding_parse(rounding));
      },
      py::arg("amount_minor"), py::arg("numerator"), py::arg("denominator"), py::arg("rounding"));
  m.def("rounding_names", [] {
    std::vector<std::string> names;
    for (Rounding rounding : roundings_all()) names.emplace_back(rounding_name(rounding));
    return names;
  });

  py::class_<Fee>(m, "Fee")
      .def(py::init([](py::handle rate_bps, py::handle fixed_minor, py::handle min_minor, py::handle max_minor,
                       const std::string& rounding) {
             Fee fee;
             fee.rate_bps = int64_from<InvalidArgument>(rate_bps, "fee rate_bps");
             fee.fixed_minor = int64_from<InvalidAmount>(fixed_minor, "fee fixed_minor");
             fee.min_minor = bound_from(min_minor, "fee min_minor");
             fee.max_minor = bound_from(max_minor, "fee max_minor");
             fee.rounding = rounding_parse(rounding);
             fee_validate(fee);
             return fee;
           }),
           py::arg("rate_bps") = 0, py::arg("fixed_minor") = 0, py::arg("min_minor") = py::none(),
           py::arg("max_minor") = py::none(), py::arg("rounding") = "half_up")
      .def_readonly("rate_bps", &Fee::rate_bps)
      .def_readonly("fixed_minor", &Fee::fixed_minor)
      .def_readonly("min_minor", &Fee::min_minor)
      .def_readonly("max_minor", &Fee::max_minor)
      .def_property_readonly("rounding", [](const Fee& fee) { return rounding_name(fee.rounding); });
  m.def(
      "fee_compute", [](py::handle amount, const Fee& fee) { return fee_compute(amount_from(amount), fee); },
      py::arg("amount_minor"), py::arg("fee"));

  m.def(
      "amount_split",
      [](py::handle amount, const py::sequence& weights) {
        std::vector<std::int64_t> weights_converted;
        weights_converted.reserve(weights.size());
        for (py::handle weight : weights) weights_converted.push_back(int64_from<InvalidArgument>(weight, "weight"));
        return amount_split(amount_from(amount), weights_converted);
      },
      py::arg("amount_minor"), py::arg("weights"));

  py::class_<Currency>(m, "Currency")
      .def_readonly("code", &Currency::code)
      .def_readonly("exponent", &Currency::exponent);
  m.def("currency_get", &currency_get, py::arg("code"), py::return_value_policy::copy);
  m.def(
      "currency_register",
      [](std::string code, py::handle exponent) { currency_register(std::move(code), exponent_from(exponent)); },
      py::arg("code"), py::arg("exponent"));
  m.def("currency_known", &currency_known, py::arg("code"));
}

}  // namespace payq::bindings
