#include "core/connection.h"

#include <fcntl.h>

#include <array>
#include <cstring>

#include "shm/memfd.h"
#include "wire/limits.h"

namespace swipc::core {

namespace {

/// One scratch per thread for large fast-lane messages on their way out of line: warm pages,
/// no allocation per message. Kept up to KEEP_BYTES, given back above it.
constexpr size_t LARGE_SCRATCH_KEEP_BYTES = size_t{4} << 20;
thread_local std::vector<capnp::word> tlsLargeScratch;

std::vector<capnp::word>& largeScratch() { return tlsLargeScratch; }
void releaseLargeScratch() {
  if (tlsLargeScratch.capacity() * sizeof(capnp::word) > LARGE_SCRATCH_KEEP_BYTES)
    std::vector<capnp::word>().swap(tlsLargeScratch);
}

}  // namespace

using queue::RING_HEADER_BYTES;
using queue::RingHeader;
using queue::RingStatus;

Result<std::unique_ptr<Connection>> Connection::createForDaemon(UniqueFd&& socket, RingSizes sizes,
                                                                uint64_t maxMessageBytes, WakeMode wakes) {
  std::unique_ptr<Connection> c(new Connection());
  c->role_ = Role::DAEMON;
  c->wakeMode_ = wakes;
  c->maxMessageBytes_ = maxMessageBytes;
  c->options_ = wire::readerOptions(maxMessageBytes);
  auto layout = shm::computeLayout(sizes.up, sizes.down, RING_HEADER_BYTES);
  auto fd = shm::createMemfd("swipc-client", layout.totalBytes);
  if (!fd) return fd.error();
  auto map = shm::Mapping::map(fd->get(), layout.totalBytes, shm::Access::READ_WRITE);
  if (!map) return map.error();
  c->mapping_ = std::move(*map);
  // The client must never be able to resize the segment under us (that would SIGBUS the daemon).
  if (auto s = shm::addSeals(fd->get(), shm::SEALS_FIXED_SIZE | F_SEAL_SEAL); !s) return s.error();
  shm::writeHeader(c->mapping_.data(), layout);
  c->segmentFd_ = std::move(*fd);
  if (wakes == WakeMode::WAKE_FDS) {
    auto bell = queue::Doorbell::create();
    if (!bell) return bell.error();
    c->doorbell_ = std::move(*bell);
    auto wake = queue::WakePipe::create();
    if (!wake) return wake.error();
    c->wake_ = std::move(*wake);
  }
  if (auto r = c->initRings(layout); !r) return r.error();
  c->socket_ = std::move(socket);
  return c;
}

Result<std::unique_ptr<Connection>> Connection::openForClient(UniqueFd socket, UniqueFd segment, UniqueFd doorbell,
                                                              UniqueFd wakeReadEnd,
                                                              uint64_t maxMessageBytes) {
  std::unique_ptr<Connection> c(new Connection());
  c->role_ = Role::CLIENT;
  c->socket_ = std::move(socket);
  c->maxMessageBytes_ = maxMessageBytes;
  c->options_ = wire::readerOptions(maxMessageBytes);
  auto size = shm::fileSize(segment.get());
  if (!size) return size.error();
  auto map = shm::Mapping::map(segment.get(), *size, shm::Access::READ_WRITE);
  if (!map) return map.error();
  c->mapping_ = std::move(*map);
  auto layout = shm::readHeader(c->mapping_.data(), c->mapping_.size(), RING_HEADER_BYTES);
  if (!layout) return layout.error();
  if (doorbell.valid() != wakeReadEnd.valid())
    return makeError(Errc::PROTOCOL_VIOLATION, "a doorbell without a wake pipe, or the other way round");
  if (doorbell.valid()) {
    c->doorbell_ = queue::Doorbell(std::move(doorbell));
    auto wake = queue::WakePipe::adoptReadEnd(std::move(wakeReadEnd));
    if (!wake) return wake.error();
    c->wake_ = std::move(*wake);
  } else {
    c->wakeMode_ = WakeMode::SOCKET;
  }
  if (auto r = c->initRings(*layout); !r) return r.error();
  return c;
}

Result<void> Connection::initRings(const shm::SegmentLayout& l) {
  uint8_t* base = mapping_.data();
  auto* up = reinterpret_cast<RingHeader*>(base + l.upOffset);
  auto* down = reinterpret_cast<RingHeader*>(base + l.downOffset);
  uint8_t* upData = base + l.upOffset + RING_HEADER_BYTES;
  uint8_t* downData = base + l.downOffset + RING_HEADER_BYTES;
  if (role_ == Role::DAEMON) {
    out_ = queue::RingWriter(down, downData, l.downCapacity);
    in_ = queue::RingReader(up, upData, l.upCapacity);
  } else {
    out_ = queue::RingWriter(up, upData, l.upCapacity);
    in_ = queue::RingReader(down, downData, l.downCapacity);
  }
  in_.setSleeping(true);  // by default every reader wants a wake; spinning clears it
  return {};
}

Connection::SendStatus Connection::send(capnp::MessageBuilder& envelope, uint64_t seq) {
  const size_t bytes = wire::encodedBytes(envelope);
  if (bytes > maxMessageBytes_) return SendStatus::TOO_BIG;
  uint8_t* dst = nullptr;
  if (fitsInline(bytes)) {
    if (SendStatus s = claimInline(bytes, dst); s != SendStatus::OK) return s;
    wire::encodeInto(envelope, dst, bytes);
    out_.commit(wire::RECORD_ENVELOPE);
    return SendStatus::OK;
  }
  return sendOutOfLine(seq, bytes, [&] { return wire::encodeToSealedMemfd(envelope, bytes); });
}

template <typename MakeFd>
Connection::SendStatus Connection::sendOutOfLine(uint64_t seq, size_t bytes, MakeFd&& makeFd) {
  // Bound the memfds in flight (each one holds an fd in the receiver).
  while (!oolSent_.empty() && oolSent_.front() <= outConsumed()) oolSent_.pop_front();
  if (oolSent_.size() >= OOL_IN_FLIGHT) {
    out_.setWaiting(true);
    return SendStatus::FULL;
  }
  // Reserve the ring record first so a full ring sends nothing at all.
  uint8_t* dst = nullptr;
  RingStatus s = out_.tryClaim(sizeof(wire::OutOfLineRecord), dst);
  if (s == RingStatus::FULL) {
    out_.setWaiting(true);
    s = out_.tryClaim(sizeof(wire::OutOfLineRecord), dst);
  }
  if (s == RingStatus::FULL) return SendStatus::FULL;
  if (s != RingStatus::OK) return SendStatus::BROKEN;
  Result<UniqueFd> fd = makeFd();
  if (!fd) {
    out_.cancelClaim();
    return SendStatus::BROKEN;
  }
  capnp::MallocMessageBuilder control(64);
  auto ool = control.initRoot<schema::Control>().initOutOfLine();
  ool.setSeq(seq);
  ool.setBytes(bytes);
  auto words = capnp::messageToFlatArray(control);
  auto io = sendDatagram(socket_.get(), words.begin(), words.size() * sizeof(capnp::word), {fd->get()});
  if (io != IoStatus::OK) {
    out_.cancelClaim();
    return io == IoStatus::AGAIN ? SendStatus::FULL : SendStatus::BROKEN;
  }
  wire::OutOfLineRecord rec{seq, bytes};
  std::memcpy(dst, &rec, sizeof rec);
  out_.commit(wire::RECORD_OUT_OF_LINE);
  oolSent_.push_back(out_.tail());
  return SendStatus::OK;
}

namespace {

/// The WAKE datagram: one word that is no Cap'n Proto message (read as a segment table it claims
/// about 1.9 billion segments), so it is told apart before any decoding.
constexpr std::array<uint8_t, 8> WAKE_DATAGRAM{'s', 'w', 'i', 'p', 'c', 'W', 'K', '!'};

bool isWake(const Datagram& d) {
  return d.fds.empty() && d.bytes.size() == WAKE_DATAGRAM.size() &&
         std::memcmp(d.bytes.data(), WAKE_DATAGRAM.data(), WAKE_DATAGRAM.size()) == 0;
}

}  // namespace

void Connection::sendWake() {
  // AGAIN: the peer has not read what we sent before, so its socket is readable already.
  (void)sendDatagram(socket_.get(), WAKE_DATAGRAM.data(), WAKE_DATAGRAM.size());
}

void Connection::wakePeer() {
  if (wakeMode_ == WakeMode::SOCKET) {
    sendWake();
  } else if (role_ == Role::DAEMON) {
    wake_.ring();  // non-blocking: a full pipe already means "wake"
  } else {
    doorbell_.ring();
  }
}

void Connection::wakePeerIfSleeping() {
  if (out_.takeReaderSleeping()) wakePeer();
}

Connection::SendStatus Connection::sendPlain(const wire::PlainMessage& m, const Value& data, size_t bytes) {
  SWIPC_REQUIRE(fitsInline(bytes), "sendPlain: not an inline message");
  if (bytes > maxMessageBytes_) return SendStatus::TOO_BIG;
  uint8_t* dst = nullptr;
  if (SendStatus s = claimInline(bytes, dst); s != SendStatus::OK) return s;
  wire::writePlain(m, data, dst, bytes);
  out_.commit(wire::RECORD_ENVELOPE);
  return SendStatus::OK;
}

Connection::ValueStatus Connection::sendValue(const wire::PlainMessage& m, const Value& data, Fit fit) {
  const size_t bytes = wire::plainBytes(m, data);
  SendStatus sent;
  if (fitsInline(bytes)) {
    sent = sendPlain(m, data, bytes);
  } else if (fit == Fit::INLINE_ONLY) {
    return ValueStatus::NOT_INLINE;
  } else if (bytes > maxMessageBytes_) {
    sent = SendStatus::TOO_BIG;
  } else {
    // Out of line, still without a builder: written once into a reused word-aligned scratch,
    // then copied into the sealed memfd by the kernel.
    sent = sendOutOfLine(m.seq, bytes, [&]() -> Result<UniqueFd> {
      std::vector<capnp::word>& buf = largeScratch();
      buf.resize(bytes / sizeof(capnp::word));
      wire::writePlain(m, data, reinterpret_cast<uint8_t*>(buf.data()), bytes);
      struct iovec part{buf.data(), bytes};
      auto fd = wire::sealedMemfdOf(&part, 1, bytes);
      releaseLargeScratch();
      return fd;
    });
  }
  switch (sent) {
    case SendStatus::OK: return ValueStatus::SENT;
    case SendStatus::FULL: return ValueStatus::FULL;
    case SendStatus::TOO_BIG: return ValueStatus::TOO_BIG;
    case SendStatus::BROKEN: return ValueStatus::BROKEN;
  }
  return ValueStatus::BROKEN;
}

Connection::SendStatus Connection::claimInline(size_t bytes, uint8_t*& dst) {
  RingStatus s = out_.tryClaim(static_cast<uint32_t>(bytes), dst);
  if (s == RingStatus::FULL) {
    out_.setWaiting(true);
    s = out_.tryClaim(static_cast<uint32_t>(bytes), dst);  // the reader may have freed space meanwhile
  }
  if (s == RingStatus::FULL) return SendStatus::FULL;
  return s == RingStatus::OK ? SendStatus::OK : SendStatus::BROKEN;
}

Connection::RecvStatus Connection::receive(wire::Inbound& out, wire::PlainMessage& plain, Value& data,
                                           uint32_t plainKinds, Error& err, const wire::PlainFilter* filter) {
  queue::RecordView rec;
  RingStatus s = in_.peek(rec);
  if (s != RingStatus::OK || rec.type != wire::RECORD_ENVELOPE || rec.length % sizeof(capnp::word) != 0 ||
      rec.length == 0 || rec.length > PLAIN_MAX_BYTES)
    return receive(out, err);  // (peeking again is idempotent)
  // One private copy; the fast lane reads it, and if it declines, the general path gets a copy of
  // that copy (never the shared bytes again).
  const size_t words = rec.length / sizeof(capnp::word);
  if (scratch_.size() < words) scratch_.resize(words);
  std::memcpy(scratch_.data(), rec.payload, rec.length);
  in_.releaseLocal();
  if (wire::readPlain(scratch_.data(), words, options_, plainKinds, plain, data, filter)) return RecvStatus::PLAIN;
  auto in = wire::Inbound::copyEnvelope(reinterpret_cast<const uint8_t*>(scratch_.data()), rec.length, options_);
  if (!in) {
    err = in.error();
    return RecvStatus::VIOLATION;
  }
  out = std::move(*in);
  return RecvStatus::OK;
}

Connection::RecvStatus Connection::receive(wire::Inbound& out, Error& err) {
  queue::RecordView rec;
  RingStatus s = in_.peek(rec);
  if (s == RingStatus::EMPTY) return RecvStatus::EMPTY;
  if (s == RingStatus::CORRUPT) {
    err = makeError(Errc::PROTOCOL_VIOLATION, "corrupt ring indices or record framing");
    return RecvStatus::VIOLATION;
  }
  if (rec.type == wire::RECORD_ENVELOPE) {
    auto in = wire::Inbound::copyEnvelope(rec.payload, rec.length, options_);
    in_.releaseLocal();
    if (!in) {
      err = in.error();
      return RecvStatus::VIOLATION;
    }
    out = std::move(*in);
    return RecvStatus::OK;
  }
  if (rec.type == wire::RECORD_OUT_OF_LINE && rec.length == sizeof(wire::OutOfLineRecord)) {
    wire::OutOfLineRecord ool;
    std::memcpy(&ool, rec.payload, sizeof ool);
    in_.releaseLocal();
    if (ool.bytes > maxMessageBytes_) {
      err = makeError(Errc::PROTOCOL_VIOLATION, "out-of-line message over the size limit");
      return RecvStatus::VIOLATION;
    }
    auto it = oolFds_.find(ool.seq);
    if (it == oolFds_.end()) {
      // The fd was sent before the record was published, so it is already queued on the socket.
      Error perr;
      pumpSocket([](wire::Inbound&&) {}, perr);
      it = oolFds_.find(ool.seq);
    }
    if (it == oolFds_.end()) {
      err = makeError(Errc::PROTOCOL_VIOLATION, "out-of-line record without its memfd");
      return RecvStatus::VIOLATION;
    }
    UniqueFd fd = std::move(it->second);
    oolFds_.erase(it);
    auto in = wire::Inbound::mapEnvelope(std::move(fd), ool.bytes, options_);
    if (!in) {
      err = in.error();
      return RecvStatus::VIOLATION;
    }
    out = std::move(*in);
    return RecvStatus::OK;
  }
  err = makeError(Errc::PROTOCOL_VIOLATION, "unknown ring record type " + std::to_string(rec.type));
  return RecvStatus::VIOLATION;
}

void Connection::publishConsumed() {
  in_.publishHead();
  // Wake a writer waiting for space once half the ring is free (or it is empty), not for every
  // batch: the drain loop publishes again as it goes, and its last publish frees everything.
  if (in_.takeWriterWaiting(in_.capacity() / 2)) wakePeer();
}

bool Connection::armAndCheck() {
  in_.setSleeping(true);
  return in_.hasData();
}

void Connection::disarm() { in_.setSleeping(false); }

bool Connection::hasIncoming() { return in_.hasData(); }

uint64_t Connection::outConsumed() {
  out_.refreshHead();
  return out_.approxHead();
}

IoStatus Connection::pumpSocket(const ControlHandler& onControl, Error& err) {
  Datagram d;
  // Bounded per call so a flooding peer cannot monopolise the loop; level-triggered epoll
  // brings us back for the rest.
  for (int budget = 0; budget < 256; ++budget) {
    IoStatus s = recvDatagram(socket_.get(), d, wire::MAX_CONTROL_BYTES);
    if (s == IoStatus::AGAIN) return IoStatus::OK;
    if (s != IoStatus::OK) return s;
    if (isWake(d)) continue;
    if (d.truncated) {
      // MSG_CTRUNC also happens when *we* are out of fds: say so rather than blame the peer.
      bool outOfFds = d.bytes.size() < wire::MAX_CONTROL_BYTES && d.fds.empty();
      err = outOfFds ? makeError(Errc::SYSTEM, "could not receive a passed fd (process out of file descriptors?)")
                     : makeError(Errc::PROTOCOL_VIOLATION, "oversize control datagram or too many fds");
      return IoStatus::FAILED;
    }
    if (d.bytes.size() % sizeof(capnp::word) != 0 || d.bytes.empty()) {
      err = makeError(Errc::PROTOCOL_VIOLATION, "control datagram is not a whole number of words");
      return IoStatus::FAILED;
    }
    auto words = kj::heapArray<capnp::word>(d.bytes.size() / sizeof(capnp::word));
    std::memcpy(words.begin(), d.bytes.data(), d.bytes.size());
    auto in = wire::Inbound::adoptControl(std::move(words), wire::readerOptions(wire::MAX_CONTROL_BYTES));
    if (!in) {
      err = in.error();
      return IoStatus::FAILED;
    }
    auto control = in->control();
    if (control.isOutOfLine()) {
      if (d.fds.size() != 1) {
        err = makeError(Errc::PROTOCOL_VIOLATION, "out-of-line notice without exactly one fd");
        return IoStatus::FAILED;
      }
      if (oolFds_.size() >= OOL_RECEIVER_LIMIT) {
        err = makeError(Errc::PROTOCOL_VIOLATION, "too many out-of-line fds without records");
        return IoStatus::FAILED;
      }
      oolFds_[control.getOutOfLine().getSeq()] = std::move(d.fds[0]);
      continue;
    }
    if (control.isBcRing() && role_ == Role::CLIENT) {
      if (d.fds.size() != 1) {
        err = makeError(Errc::PROTOCOL_VIOLATION, "channel ring notice without exactly one fd");
        return IoStatus::FAILED;
      }
      ringFds_[control.getBcRing().getRingId()] = {std::move(d.fds[0]), control.getBcRing().getCapacity()};
      continue;
    }
    if (control.isFileFd() && role_ == Role::CLIENT) {
      if (d.fds.size() != 1) {
        err = makeError(Errc::PROTOCOL_VIOLATION, "file notice without exactly one fd");
        return IoStatus::FAILED;
      }
      if (fileFds_.size() >= FILE_FD_RECEIVER_LIMIT) {
        err = makeError(Errc::PROTOCOL_VIOLATION, "too many passed files without the envelopes that name them");
        return IoStatus::FAILED;
      }
      fileFds_[control.getFileFd().getToken()] = std::move(d.fds[0]);
      continue;
    }
    if (!d.fds.empty()) {
      err = makeError(Errc::PROTOCOL_VIOLATION, "unexpected fds on a control message");
      return IoStatus::FAILED;
    }
    onControl(std::move(*in));
  }
  return IoStatus::OK;
}

UniqueFd Connection::takeRingFd(uint64_t ringId, uint64_t& capacity) {
  auto it = ringFds_.find(ringId);
  if (it == ringFds_.end()) {
    Error err;
    pumpSocket([](wire::Inbound&&) {}, err);
    it = ringFds_.find(ringId);
    if (it == ringFds_.end()) return UniqueFd();
  }
  UniqueFd fd = std::move(it->second.first);
  capacity = it->second.second;
  ringFds_.erase(it);
  return fd;
}

UniqueFd Connection::takeFileFd(uint64_t token) {
  auto it = fileFds_.find(token);
  if (it == fileFds_.end()) {
    Error err;
    pumpSocket([](wire::Inbound&&) {}, err);
    it = fileFds_.find(token);
    if (it == fileFds_.end()) return UniqueFd();
  }
  UniqueFd fd = std::move(it->second);
  fileFds_.erase(it);
  return fd;
}

bool Connection::sendControl(capnp::MessageBuilder& control) {
  auto words = capnp::messageToFlatArray(control);
  return sendDatagram(socket_.get(), words.begin(), words.size() * sizeof(capnp::word)) == IoStatus::OK;
}

}  // namespace swipc::core
