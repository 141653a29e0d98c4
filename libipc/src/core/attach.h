// The attach handshake (DESIGN §3): Hello -> Welcome + (segment memfd, doorbell eventfd, wake
// pipe read end), or Welcome{socketWakes} + (segment memfd) when the daemon is short of fds
// (core/connection.h, WakeMode::SOCKET).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/connection.h"
#include "core/identity.h"
#include "swipc/types.h"

namespace swipc::core {

struct HelloInfo {
  uint32_t protocolVersion = 0;
  ClientType type = ClientType::WINDOW;
  std::string url;
  std::optional<ResumeToken> resumeToken;
  bool controlled = true;
  std::string openToken;  // raw bytes, set by pages spawned through clients.openWindow
};

struct WelcomeInfo {
  ClientId clientId;
  ResumeToken resumeToken{};
  uint64_t daemonEpoch = 0;
  uint64_t maxMessageBytes = 0;
  bool controlled = true;
  std::string swVersion;
  RingSizes rings;
  bool socketWakes = false;  // wakes as datagrams on the socket: no doorbell, no wake pipe
};

struct Attached {
  std::unique_ptr<Connection> connection;
  WelcomeInfo welcome;
};

/// Client side, blocking until `deadline`: connect, check that the daemon's uid (SO_PEERCRED) is
/// ours or root's before anything is sent (InvalidAccessError otherwise), Hello, wait for
/// Welcome, map the segment. NoDaemon, AttachTimeout, VersionMismatch, ProtocolViolation,
/// Disconnected, or the daemon's own refusal by name (QuotaExceededError, InvalidAccessError, ...)
/// even when it closed before our Hello went out.
Result<Attached> attachToDaemon(const std::string& socketPath, const HelloInfo& hello, Deadline deadline);

/// Daemon side: parses a Hello datagram's control message.
Result<HelloInfo> parseHello(schema::Control::Reader control);
/// Daemon side: creates the client's connection and sends Welcome with its fds.
Result<std::unique_ptr<Connection>> sendWelcome(UniqueFd socket, const WelcomeInfo& welcome);
/// Sends an error control message (best effort, never blocks).
void sendControlError(int socketFd, Errc code, const std::string& message);

// ---- inspector (swctl, DESIGN §17): an InspectRequest instead of a Hello; one InspectReply back

/// Client side, blocking until `deadline`: connect, check the daemon's uid as attachToDaemon does,
/// send InspectRequest{command}, wait for the InspectReply: its JSON text. NoDaemon,
/// AttachTimeout, ProtocolViolation, or the daemon's refusal by name (InvalidAccessError, ...).
Result<std::string> inspectDaemon(const std::string& socketPath, const std::string& command, Deadline deadline);
/// Daemon side: sends `json` as one InspectReply, inline when small, else in a sealed memfd.
/// Never blocks: false when the datagram did not go (the peer's queue is full, or it left).
bool sendInspectReply(int socketFd, const std::string& json);

}  // namespace swipc::core
