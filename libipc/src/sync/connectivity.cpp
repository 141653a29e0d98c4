#include "sync/connectivity.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common/sys_error.h"
#include "core/log.h"

namespace swipc::sync {

namespace {

/// A dump reply is read in pieces of at most this many bytes (the kernel fills one page-sized
/// skb per read; this is ample).
constexpr size_t DUMP_BUFFER_BYTES = 64 * 1024;
/// How long one read of a dump reply may take: the kernel answers at once, so this only bounds
/// a broken socket.
constexpr timeval DUMP_READ_TIMEOUT{1, 0};

Result<UniqueFd> openNetlink(uint32_t groups, int flags) {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | flags, NETLINK_ROUTE));
  if (!fd) return sysError("socket(NETLINK_ROUTE)");
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = groups;
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) return sysError("bind(NETLINK_ROUTE)");
  return fd;
}

}  // namespace

std::string_view connectivityModeName(ConnectivityMode mode) {
  switch (mode) {
    case ConnectivityMode::AUTO: return "auto";
    case ConnectivityMode::ALWAYS: return "always";
    case ConnectivityMode::MANUAL: return "manual";
  }
  return "?";
}

Result<ConnectivityMode> parseConnectivityMode(std::string_view name) {
  for (auto mode : {ConnectivityMode::AUTO, ConnectivityMode::ALWAYS, ConnectivityMode::MANUAL}) {
    if (name == connectivityModeName(mode)) return mode;
  }
  return makeError(Errc::TYPE, "connectivity is auto, always or manual, not '" + std::string(name) + "'");
}

Result<bool> containsDefaultRoute(std::span<const uint8_t> messages, bool& done) {
  bool found = false;
  size_t offset = 0;
  // Headers are copied out rather than cast in place: the buffer need not be aligned.
  while (messages.size() - offset >= sizeof(nlmsghdr)) {
    nlmsghdr header;
    std::memcpy(&header, messages.data() + offset, sizeof header);
    if (header.nlmsg_len < sizeof(nlmsghdr) || header.nlmsg_len > messages.size() - offset) break;  // truncated
    const uint8_t* body = messages.data() + offset + NLMSG_HDRLEN;
    const size_t bodyBytes = header.nlmsg_len - NLMSG_HDRLEN;
    if (header.nlmsg_type == NLMSG_DONE) {
      done = true;
      break;
    }
    if (header.nlmsg_type == NLMSG_ERROR && bodyBytes >= sizeof(nlmsgerr)) {
      nlmsgerr err;
      std::memcpy(&err, body, sizeof err);
      if (err.error != 0) return sysError("route dump", -err.error);
    } else if (header.nlmsg_type == RTM_NEWROUTE && bodyBytes >= sizeof(rtmsg)) {
      rtmsg route;
      std::memcpy(&route, body, sizeof route);
      const bool ip = route.rtm_family == AF_INET || route.rtm_family == AF_INET6;
      if (ip && route.rtm_dst_len == 0 && route.rtm_type == RTN_UNICAST) found = true;
    }
    offset += NLMSG_ALIGN(header.nlmsg_len);
    if (offset > messages.size()) break;
  }
  return found;
}

// ---- Connectivity ----

Result<std::unique_ptr<Connectivity>> Connectivity::create(core::EventLoop& loop, ConnectivityMode mode,
                                                           bool startOffline, Listener listener) {
  std::unique_ptr<Connectivity> conn(new Connectivity(loop, mode, std::move(listener)));
  switch (mode) {
    case ConnectivityMode::ALWAYS: conn->online_ = true; break;
    case ConnectivityMode::MANUAL: conn->online_ = !startOffline; break;
    case ConnectivityMode::AUTO:
      if (auto r = conn->startWatching(); !r) return r.error();
      break;
  }
  core::log().info("sync: connectivity {}: {}", connectivityModeName(mode), conn->online_ ? "online" : "offline");
  return conn;
}

Connectivity::~Connectivity() {
  if (watch_ != 0) loop_.unwatch(watch_);
}

Result<void> Connectivity::setOnline(bool online) {
  if (mode_ != ConnectivityMode::MANUAL) {
    return makeError(Errc::INVALID_STATE, "connectivity is " + std::string(connectivityModeName(mode_)) +
                                              ": setOnline needs --connectivity manual");
  }
  update(online);
  return {};
}

Result<void> Connectivity::startWatching() {
  // Subscribe before the first dump, so no change can fall between the two.
  auto monitor = openNetlink(RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE, SOCK_NONBLOCK);
  if (!monitor) return monitor.error();
  monitor_ = std::move(*monitor);
  auto watch = loop_.watch(monitor_.get(), EPOLLIN, [this](uint32_t) { onNotification(); });
  if (!watch) return watch.error();
  watch_ = *watch;
  auto online = dumpHasDefaultRoute();
  if (!online) return online.error();
  online_ = *online;
  return {};
}

void Connectivity::onNotification() {
  // Drain the batch; the content does not matter, the dump that follows is the truth. ENOBUFS
  // (the kernel dropped notifications) says the same: something changed.
  std::vector<uint8_t> buffer(DUMP_BUFFER_BYTES);
  for (;;) {
    const ssize_t n = ::recv(monitor_.get(), buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n >= 0) continue;
    if (errno == EINTR || errno == ENOBUFS) continue;
    break;  // EAGAIN: drained
  }
  ++routeChanges_;
  refresh();
}

void Connectivity::refresh() {
  auto online = dumpHasDefaultRoute();
  if (!online) {
    core::log().warn("sync: cannot read the routing table: {}", online.error().describe());
    return;  // keep the last known state
  }
  update(*online);
}

Result<bool> Connectivity::dumpHasDefaultRoute() {
  if (!query_) {
    auto query = openNetlink(0, 0);
    if (!query) return query.error();
    if (::setsockopt(query->get(), SOL_SOCKET, SO_RCVTIMEO, &DUMP_READ_TIMEOUT, sizeof DUMP_READ_TIMEOUT) != 0) {
      return sysError("setsockopt(SO_RCVTIMEO)");
    }
    query_ = std::move(*query);
  }
  bool found = false;
  for (uint8_t family : {uint8_t{AF_INET}, uint8_t{AF_INET6}}) {
    auto r = dumpFamily(family);
    if (!r) {
      query_.reset();  // a half-read reply must not be taken for the next dump's
      return r.error();
    }
    found = found || *r;
  }
  return found;
}

Result<bool> Connectivity::dumpFamily(uint8_t family) {
  struct {
    nlmsghdr header;
    rtmsg route;
  } request{};
  request.header.nlmsg_len = NLMSG_LENGTH(sizeof(rtmsg));
  request.header.nlmsg_type = RTM_GETROUTE;
  request.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  request.header.nlmsg_seq = ++dumpSeq_;
  request.route.rtm_family = family;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(query_.get(), &request, request.header.nlmsg_len, 0, reinterpret_cast<const sockaddr*>(&kernel),
               sizeof kernel) < 0) {
    return sysError("send route dump request");
  }
  std::vector<uint8_t> buffer(DUMP_BUFFER_BYTES);
  bool found = false;
  bool done = false;
  while (!done) {
    const ssize_t n = ::recv(query_.get(), buffer.data(), buffer.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sysError("read route dump");
    }
    if (n == 0) return makeError(Errc::SYSTEM, "read route dump: socket closed");
    auto r = containsDefaultRoute(std::span<const uint8_t>(buffer.data(), static_cast<size_t>(n)), done);
    if (!r) return r.error();
    found = found || *r;
  }
  return found;
}

void Connectivity::update(bool online) {
  if (online == online_) return;
  online_ = online;
  core::log().info("sync: {} ({})", online ? "online" : "offline", connectivityModeName(mode_));
  if (listener_) listener_(online);
}

}  // namespace swipc::sync
