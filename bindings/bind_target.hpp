// Runs core work on what Python handed over: a _core.Database (payq runs its
// own transaction, retrying transient failures) or an executor object (a
// payq Transaction or an AppExecutor: the caller's transaction). The GIL is
// released for the work.
#pragma once

#include <memory>

#include "bind.hpp"
#include "payq/database.hpp"

namespace payq::bindings {

template <typename Work>
auto on_target(py::handle target, Work&& work) {
  if (py::isinstance<Database>(target)) {
    auto database = target.cast<std::shared_ptr<Database>>();
    py::gil_scoped_release release;
    return database->transact([&](Transaction& tx) { return work(static_cast<Executor&>(tx)); });
  }
  Executor& executor = executor_from(target);
  py::gil_scoped_release release;
  return work(executor);
}

}  // namespace payq::bindings
