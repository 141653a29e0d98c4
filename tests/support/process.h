// Test support: the testing kit (swipc/testing.h: TempDir, ChildProcess, Daemon, ScriptClient,
// Scope, eventually, /proc readers) plus what only this tree's tests use: the helper binaries
// built under tests/support.
#pragma once

#include <swipc/testing.h>

#include <string>

namespace swipc::testing {

/// tests/support/hostile_client: writes raw rings and envelopes.
std::string hostileClientPath();
/// tests/support/bc_peer: library-based BroadcastChannel receiver/sender.
std::string bcPeerPath();
/// tests/support/port_peer: library-based MessagePort sender/relay/receiver/holder.
std::string portPeerPath();

/// Whether RSS figures of the processes under test mean what they say. Not in an AddressSanitizer
/// build: freed memory waits in ASan's quarantine (256 MiB by default) and every block carries
/// redzones, so a flood shows up as ~300 MiB whatever the code does. The plain pass of
/// scripts/test.sh checks the figures; the sanitizer pass checks everything else.
constexpr bool rssFiguresHold() {
#if defined(__SANITIZE_ADDRESS__)
  return false;
#else
  return true;
#endif
}

}  // namespace swipc::testing
