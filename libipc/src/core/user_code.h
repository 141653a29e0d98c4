// Service-worker code (the daemon's handlers) runs inside the daemon's loop. An exception it
// throws must neither end the daemon nor be taken for a client's malformed message, so the
// daemon runs every such callback through callUser(), which logs what it throws and goes on.
// (A page's callbacks are the page's own business: the client library lets them propagate.)
#pragma once

#include <exception>

#include "core/log.h"

namespace swipc::core {

template <typename F>
void callUser(const char* what, F&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    log().error("{} threw: {}", what, e.what());
  }
}

}  // namespace swipc::core
