// Names the calling thread (what `top -H`, `ps -L`, perf and /proc/PID/task/TID/comm show), so
// the daemon's threads can be told apart: the event loop keeps the program's name.
#pragma once

#include <pthread.h>

#include <string>

namespace swipc {

/// At most 15 characters are kept (the kernel's limit).
inline void nameThisThread(const std::string& name) {
  ::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str());
}

}  // namespace swipc
