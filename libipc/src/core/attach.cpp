#include "core/attach.h"

#include <kj/exception.h>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cstring>

#include "shm/memfd.h"
#include "wire/codec.h"
#include "wire/limits.h"

namespace swipc::core {

namespace {

bool sendControlWords(int fd, capnp::MessageBuilder& mb, const std::vector<int>& fds = {}) {
  auto words = capnp::messageToFlatArray(mb);
  return sendDatagram(fd, words.begin(), words.size() * sizeof(capnp::word), fds) == IoStatus::OK;
}

Result<wire::Inbound> decodeControl(const Datagram& d) {
  if (d.truncated || d.bytes.empty() || d.bytes.size() % sizeof(capnp::word) != 0)
    return makeError(Errc::PROTOCOL_VIOLATION, "malformed control datagram");
  auto words = kj::heapArray<capnp::word>(d.bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), d.bytes.data(), d.bytes.size());
  return wire::Inbound::adoptControl(std::move(words), wire::readerOptions(wire::MAX_CONTROL_BYTES));
}

}  // namespace

void sendControlError(int socketFd, Errc code, const std::string& message) {
  capnp::MallocMessageBuilder mb(128);
  auto e = mb.initRoot<schema::Control>().initError();
  e.setName(std::string(errorName(code)));
  e.setMessage(message);
  sendControlWords(socketFd, mb);
}

namespace {

/// The daemon must be who we think it is before it hears our Hello (which carries the resume
/// token, i.e. our client id): the listening socket's owner, as the kernel recorded it at
/// listen(), is our euid or root. A socket planted by another user gets nothing from us.
Result<void> checkDaemonIdentity(int fd, const std::string& socketPath) {
  auto cred = peerCred(fd);
  if (!cred) return cred.error();
  if (cred->uid == ::geteuid() || cred->uid == 0) return {};
  return makeError(Errc::INVALID_ACCESS, "the socket at " + socketPath + " is served by uid " +
                                             std::to_string(cred->uid) + " (pid " + std::to_string(cred->pid) +
                                             "), not by us or root: refusing to send it our Hello");
}

Result<void> sendHello(int fd, const HelloInfo& hello, bool& hungUp) {
  capnp::MallocMessageBuilder mb(128);
  auto h = mb.initRoot<schema::Control>().initHello();
  h.setProtocolVersion(hello.protocolVersion);
  h.setClientType(hello.type == ClientType::WORKER ? schema::ClientType::WORKER : schema::ClientType::WINDOW);
  h.setUrl(hello.url);
  if (hello.resumeToken) h.setResumeToken(capnp::Data::Reader(hello.resumeToken->data(), hello.resumeToken->size()));
  h.setControlled(hello.controlled);
  if (!hello.openToken.empty())
    h.setOpenToken(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(hello.openToken.data()), hello.openToken.size()));
  auto words = capnp::messageToFlatArray(mb);
  IoStatus s = sendDatagram(fd, words.begin(), words.size() * sizeof(capnp::word));
  if (s == IoStatus::AGAIN) return makeError(Errc::ATTACH_TIMEOUT, "daemon's socket is full");
  // A daemon that refuses us (quota, uid) may have sent its reason and closed before our Hello
  // went out: the send fails, but the reason is waiting in our receive queue. Read it first.
  hungUp = s != IoStatus::OK;
  return {};
}

/// Waits for the daemon's first datagram (Welcome or a named refusal) until `deadline`.
Result<void> receiveAnswer(int fd, Datagram& d, Deadline deadline) {
  bool reset = false;
  for (;;) {
    IoStatus s = recvDatagram(fd, d, wire::MAX_CONTROL_BYTES);
    if (s == IoStatus::OK) return {};
    if (s == IoStatus::CLOSED) {
      // A daemon that closed with our Hello unread resets the connection: the first read says
      // ECONNRESET, and the refusal it sent before closing is still queued behind that. Read once
      // more before calling it a hang-up.
      if (!reset) {
        reset = true;
        continue;
      }
      return makeError(Errc::NO_DAEMON, "daemon closed the connection during attach");
    }
    if (s == IoStatus::FAILED) return makeError(Errc::DISCONNECTED, "attach: recv failed");
    if (reset) return makeError(Errc::NO_DAEMON, "daemon closed the connection during attach");
    auto now = Clock::now();
    if (now >= deadline) return makeError(Errc::ATTACH_TIMEOUT, "no Welcome from the daemon before the deadline");
    int ms = deadline == Deadline::max()
                 ? -1
                 : static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1);
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, ms);
  }
}

}  // namespace

Result<Attached> attachToDaemon(const std::string& socketPath, const HelloInfo& hello, Deadline deadline) {
  auto sock = waitConnectSeqpacket(socketPath, deadline);
  if (!sock) return sock.error();
  if (auto r = checkDaemonIdentity(sock->get(), socketPath); !r) return r.error();
  bool hungUp = false;
  if (auto r = sendHello(sock->get(), hello, hungUp); !r) return r.error();
  Datagram d;
  if (auto r = receiveAnswer(sock->get(), d, deadline); !r) {
    if (hungUp && r.error().code == Errc::NO_DAEMON) return makeError(Errc::NO_DAEMON, "daemon hung up during attach");
    return r.error();
  }
  auto in = decodeControl(d);
  if (!in) return in.error();
  auto control = in->control();
  if (control.isError()) {
    Errc code = Errc::PROTOCOL_VIOLATION;
    errorFromName(control.getError().getName().cStr(), code);
    return makeError(code, control.getError().getMessage().cStr());
  }
  if (!control.isWelcome()) return makeError(Errc::PROTOCOL_VIOLATION, "expected Welcome");
  auto w = control.getWelcome();
  if (d.fds.size() != (w.getSocketWakes() ? 1u : 3u))
    return makeError(Errc::PROTOCOL_VIOLATION, w.getSocketWakes() ? "expected Welcome{socketWakes} with a segment"
                                                                  : "expected Welcome with a segment, a doorbell and a wake pipe");
  if (w.getLayoutVersion() != shm::LAYOUT_VERSION)
    return makeError(Errc::VERSION_MISMATCH, "daemon uses segment layout " + std::to_string(w.getLayoutVersion()));
  if (w.getClientId().size() != 16 || w.getResumeToken().size() != 32)
    return makeError(Errc::PROTOCOL_VIOLATION, "Welcome with a malformed id or token");
  Attached a;
  std::array<uint8_t, 16> id;
  std::memcpy(id.data(), w.getClientId().begin(), 16);
  a.welcome.clientId = ClientId(id);
  std::memcpy(a.welcome.resumeToken.data(), w.getResumeToken().begin(), 32);
  a.welcome.daemonEpoch = w.getDaemonEpoch();
  a.welcome.maxMessageBytes = w.getMaxMessageBytes();
  a.welcome.controlled = w.getControlled();
  a.welcome.swVersion = w.getSwVersion().cStr();
  a.welcome.rings = RingSizes{w.getUpRingBytes(), w.getDownRingBytes()};
  a.welcome.socketWakes = w.getSocketWakes();
  UniqueFd doorbell, wakeReadEnd;
  if (!a.welcome.socketWakes) {
    doorbell = std::move(d.fds[1]);
    wakeReadEnd = std::move(d.fds[2]);
  }
  auto conn = Connection::openForClient(std::move(*sock), std::move(d.fds[0]), std::move(doorbell),
                                        std::move(wakeReadEnd), a.welcome.maxMessageBytes);
  if (!conn) return conn.error();
  a.connection = std::move(*conn);
  return a;
}

namespace {
Result<HelloInfo> readHello(schema::Control::Reader control) {
  if (!control.isHello()) return makeError(Errc::PROTOCOL_VIOLATION, "first message was not Hello");
  auto h = control.getHello();
  HelloInfo info;
  info.protocolVersion = h.getProtocolVersion();
  info.type = h.getClientType() == schema::ClientType::WORKER ? ClientType::WORKER : ClientType::WINDOW;
  info.url = h.getUrl().cStr();
  if (info.url.size() > 2048) return makeError(Errc::TYPE, "url longer than 2048 bytes");
  info.controlled = h.getControlled();
  auto ot = h.getOpenToken();
  if (ot.size() > 64) return makeError(Errc::PROTOCOL_VIOLATION, "open token longer than 64 bytes");
  info.openToken.assign(reinterpret_cast<const char*>(ot.begin()), ot.size());
  auto t = h.getResumeToken();
  if (t.size() == 32) {
    ResumeToken tok;
    std::memcpy(tok.data(), t.begin(), 32);
    info.resumeToken = tok;
  } else if (t.size() != 0) {
    return makeError(Errc::PROTOCOL_VIOLATION, "resume token must be 32 bytes");
  }
  return info;
}
}  // namespace

Result<HelloInfo> parseHello(schema::Control::Reader control) {
  // The Hello was walked for bounds at receipt, not for what each pointer points at: a field of
  // the wrong kind (a struct where text belongs) throws as it is read.
  try {
    return readHello(control);
  } catch (const kj::Exception& e) {
    return makeError(Errc::PROTOCOL_VIOLATION, std::string("malformed Hello: ") + e.getDescription().cStr());
  }
}

Result<std::unique_ptr<Connection>> sendWelcome(UniqueFd socket, const WelcomeInfo& welcome) {
  int sockFd = socket.get();
  auto conn = Connection::createForDaemon(std::move(socket), welcome.rings, welcome.maxMessageBytes,
                                         welcome.socketWakes ? Connection::WakeMode::SOCKET
                                                             : Connection::WakeMode::WAKE_FDS);
  if (!conn) {
    // The client hears why (instead of a bare hang-up that looks like "no daemon").
    sendControlError(sockFd, conn.error().code, "daemon cannot attach a client now: " + conn.error().message);
    return conn.error();
  }
  capnp::MallocMessageBuilder mb(256);
  auto w = mb.initRoot<schema::Control>().initWelcome();
  w.setClientId(capnp::Data::Reader(welcome.clientId.bytes().data(), 16));
  w.setResumeToken(capnp::Data::Reader(welcome.resumeToken.data(), 32));
  w.setLayoutVersion(shm::LAYOUT_VERSION);
  w.setUpRingBytes(static_cast<uint32_t>(welcome.rings.up));
  w.setDownRingBytes(static_cast<uint32_t>(welcome.rings.down));
  w.setDaemonEpoch(welcome.daemonEpoch);
  w.setMaxMessageBytes(welcome.maxMessageBytes);
  w.setControlled(welcome.controlled);
  w.setSwVersion(welcome.swVersion);
  w.setSocketWakes(welcome.socketWakes);
  std::vector<int> fds{(*conn)->segmentFd()};
  if (!welcome.socketWakes) fds.insert(fds.end(), {(*conn)->doorbellFd(), (*conn)->wakeReadFd()});
  if (!sendControlWords(sockFd, mb, fds))
    return makeError(Errc::DISCONNECTED, "could not send Welcome");
  (*conn)->forgetPassedFds();
  return conn;
}

// ------------------------------------------------------------------------------------------------ inspector

namespace {

/// Replies up to this size travel inline (a control datagram is read into MAX_CONTROL_BYTES).
constexpr size_t INSPECT_INLINE_BYTES = 4096;
/// A reply in a memfd larger than this is refused by the inspector (10,000 clients take ~2 MB).
constexpr size_t INSPECT_MAX_BYTES = 256ull << 20;

Result<std::string> readInspectMemfd(const UniqueFd& fd, uint64_t bytes) {
  auto seals = shm::getSeals(fd.get());
  if (!seals) return seals.error();
  const unsigned need = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
  if ((*seals & need) != need) return makeError(Errc::PROTOCOL_VIOLATION, "inspect reply memfd is not sealed");
  auto size = shm::fileSize(fd.get());
  if (!size) return size.error();
  if (bytes > INSPECT_MAX_BYTES || *size != bytes)
    return makeError(Errc::PROTOCOL_VIOLATION, "inspect reply of " + std::to_string(bytes) + " bytes in a memfd of " +
                                                   std::to_string(*size));
  std::string out(bytes, '\0');
  size_t done = 0;
  while (done < bytes) {
    ssize_t r = ::pread(fd.get(), out.data() + done, bytes - done, static_cast<off_t>(done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return makeError(Errc::PROTOCOL_VIOLATION, "inspect reply memfd is short");
    done += static_cast<size_t>(r);
  }
  return out;
}

}  // namespace

Result<std::string> inspectDaemon(const std::string& socketPath, const std::string& command, Deadline deadline) {
  auto sock = waitConnectSeqpacket(socketPath, deadline);
  if (!sock) return sock.error();
  if (auto r = checkDaemonIdentity(sock->get(), socketPath); !r) return r.error();
  capnp::MallocMessageBuilder mb(64);
  mb.initRoot<schema::Control>().initInspect().setCommand(command);
  auto words = capnp::messageToFlatArray(mb);
  IoStatus s = sendDatagram(sock->get(), words.begin(), words.size() * sizeof(capnp::word));
  if (s == IoStatus::AGAIN) return makeError(Errc::ATTACH_TIMEOUT, "daemon's socket is full");
  const bool hungUp = s != IoStatus::OK;  // a refusal may wait in our queue: read it first
  Datagram d;
  if (auto r = receiveAnswer(sock->get(), d, deadline); !r) {
    if (hungUp && r.error().code == Errc::NO_DAEMON) return makeError(Errc::NO_DAEMON, "daemon hung up before answering");
    return r.error();
  }
  auto in = decodeControl(d);
  if (!in) return in.error();
  auto control = in->control();
  if (control.isError()) {
    Errc code = Errc::PROTOCOL_VIOLATION;
    errorFromName(control.getError().getName().cStr(), code);
    return makeError(code, control.getError().getMessage().cStr());
  }
  if (!control.isInspectReply()) return makeError(Errc::PROTOCOL_VIOLATION, "expected an InspectReply");
  auto reply = control.getInspectReply();
  if (d.fds.empty()) return std::string(reply.getJson().cStr());
  if (d.fds.size() != 1) return makeError(Errc::PROTOCOL_VIOLATION, "InspectReply with more than one fd");
  return readInspectMemfd(d.fds[0], reply.getBytes());
}

bool sendInspectReply(int socketFd, const std::string& json) {
  capnp::MallocMessageBuilder mb(128);
  auto reply = mb.initRoot<schema::Control>().initInspectReply();
  if (json.size() <= INSPECT_INLINE_BYTES) {
    reply.setJson(json);
    return sendControlWords(socketFd, mb);
  }
  auto fd = shm::createMemfd("swipc-inspect", json.size());
  if (!fd) return false;
  size_t done = 0;
  while (done < json.size()) {
    ssize_t r = ::pwrite(fd->get(), json.data() + done, json.size() - done, static_cast<off_t>(done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    done += static_cast<size_t>(r);
  }
  if (!shm::addSeals(fd->get(), F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL)) return false;
  reply.setBytes(json.size());
  return sendControlWords(socketFd, mb, {fd->get()});
}

}  // namespace swipc::core
