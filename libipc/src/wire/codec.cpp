#include "wire/codec.h"

#include <kj/debug.h>
#include <kj/exception.h>
#include <kj/io.h>
#include <sys/mman.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "common/sys_error.h"
#include "shm/memfd.h"
#include "wire/value_codec.h"
#include "wire/value_decode.h"

namespace swipc::wire {

bool isPlain(schema::Envelope::Reader env) {
  // Port descriptors are data only, except the messages queued at a port in transit: those carry
  // payloads (and ports) of their own, so a descriptor with a queue makes the envelope walked.
  // A payload pointer of the wrong kind makes the envelope walked, not refused here: the payload
  // may have come from another client through the daemon, and its receiver turns it into a
  // messageerror for that message (the daemon checks what it relays: Inbound::checkPayloads).
  auto plainPost = [](auto post) {
    try {
      auto payload = post.getPayload();
      if (!payload.isValue()) return false;
      (void)payload.getValue();  // the Value's own pointer: from here on only its content is unchecked
      for (auto d : post.getPorts())
        if (d.getQueued().size() != 0) return false;
    } catch (const kj::Exception&) {
      return false;
    }
    return true;
  };
  switch (env.which()) {
    case schema::Envelope::CONTROLLER_POST: return plainPost(env.getControllerPost());
    case schema::Envelope::CLIENT_POST: return plainPost(env.getClientPost());
    case schema::Envelope::PORT_MESSAGE: return plainPost(env.getPortMessage());
    case schema::Envelope::BC_MESSAGE: {
      try {
        auto payload = env.getBcMessage().getPayload();
        if (!payload.isValue()) return false;
        (void)payload.getValue();
      } catch (const kj::Exception&) {
        return false;
      }
      return true;
    }
    // Data only, but behind the union's struct pointer: that pointer is checked here (an
    // out-of-bounds or wrong-kind one throws, and the envelope is refused), or its handler's
    // first get would throw outside any catch (found by tests/fuzz page_receive).
    case schema::Envelope::ACK: (void)env.getAck(); return true;
    case schema::Envelope::CLIENT_STATE: (void)env.getClientState(); return true;
    case schema::Envelope::CONTROLLER_CHANGE: (void)env.getControllerChange(); return true;
    case schema::Envelope::FOCUS: return true;  // Void: no pointer
    case schema::Envelope::BC_LEAVE: (void)env.getBcLeave(); return true;
    case schema::Envelope::BC_LAPPED: (void)env.getBcLapped(); return true;
    case schema::Envelope::PORT_CLOSE: (void)env.getPortClose(); return true;
    case schema::Envelope::PORT_CLOSED: (void)env.getPortClosed(); return true;
    case schema::Envelope::PORT_ACK: (void)env.getPortAck(); return true;
    default:
      return false;  // text, port descriptors, typed content, broadcast payloads: walk them
  }
}

kj::ArrayPtr<const capnp::word> Inbound::words() const {
  return mapping_ ? kj::ArrayPtr<const capnp::word>(reinterpret_cast<const capnp::word*>(mapping_->data()),
                                                    bytes_ / sizeof(capnp::word))
                  : words_.asPtr();
}

Result<void> Inbound::checkAll() const {
  if (walked_) return {};
  try {
    capnp::FlatArrayMessageReader fresh(words(), options_);
    fresh.getRoot<schema::Envelope>().totalSize();
  } catch (const kj::Exception& e) {
    return makeError(Errc::PROTOCOL_VIOLATION, std::string("malformed message: ") + e.getDescription().cStr());
  }
  return {};
}

namespace {

Error malformed(const kj::Exception& e) {
  return makeError(Errc::PROTOCOL_VIOLATION, std::string("malformed relayed payload: ") + e.getDescription().cStr());
}

/// checkPayload without the exception boundary (the Value's own check has one).
Result<void> checkPayloadUnguarded(schema::Payload::Reader payload) {
  switch (payload.which()) {
    case schema::Payload::VALUE: return checkValue(payload.getValue());
    case schema::Payload::TYPED: {
      auto t = payload.getTyped();
      (void)t.getTypeId();
      (void)t.getContent().targetSize();  // whatever it is, it lies in bounds
      return {};
    }
  }
  return {};  // a kind of a newer peer's: its receiver decides (messageerror)
}

/// Nesting (ports in messages queued at ports) is bounded by the reader's nesting limit (it throws).
Result<void> checkPortsUnguarded(capnp::List<schema::PortDescriptor>::Reader ports) {
  KJ_REQUIRE(!decode::zeroSized(ports), "a transfer list of zero-sized descriptors");
  for (auto d : ports) {
    auto queued = d.getQueued();
    KJ_REQUIRE(!decode::zeroSized(queued), "a port queue of zero-sized messages");
    for (auto q : queued) {
      if (auto r = checkPayloadUnguarded(q.getPayload()); !r) return r;
      if (auto r = checkPortsUnguarded(q.getPorts()); !r) return r;
    }
  }
  return {};
}

template <typename Post>
Result<void> checkPost(Post post) {
  if (auto r = checkPayloadUnguarded(post.getPayload()); !r) return r;
  return checkPortsUnguarded(post.getPorts());
}

}  // namespace

Result<void> checkPayload(schema::Payload::Reader payload) {
  try {
    return checkPayloadUnguarded(payload);
  } catch (const kj::Exception& e) {
    return malformed(e);
  }
}

Result<void> checkPorts(capnp::List<schema::PortDescriptor>::Reader ports) {
  try {
    return checkPortsUnguarded(ports);
  } catch (const kj::Exception& e) {
    return malformed(e);
  }
}

Result<void> Inbound::checkPayloads() const {
  try {
    capnp::FlatArrayMessageReader fresh(words(), options_);
    auto env = fresh.getRoot<schema::Envelope>();
    switch (env.which()) {
      case schema::Envelope::CONTROLLER_POST: return checkPost(env.getControllerPost());
      case schema::Envelope::CLIENT_POST: return checkPost(env.getClientPost());
      case schema::Envelope::PORT_POST: return checkPost(env.getPortPost());
      case schema::Envelope::PORT_MESSAGE: return checkPost(env.getPortMessage());
      case schema::Envelope::BC_POST: return checkPayloadUnguarded(env.getBcPost().getPayload());
      case schema::Envelope::BC_MESSAGE: return checkPayloadUnguarded(env.getBcMessage().getPayload());
      default: return {};
    }
  } catch (const kj::Exception& e) {
    return malformed(e);
  }
}

template <typename Root>
Result<Inbound> Inbound::validate(Inbound in, const capnp::ReaderOptions& options) {
  in.options_ = options;
  try {
    in.reader_ = std::make_unique<capnp::FlatArrayMessageReader>(in.words(), options);
    auto root = in.reader_->template getRoot<Root>();
    if constexpr (std::is_same_v<Root, schema::Envelope>) {
      if (root.getSchemaVersion() != schema::SCHEMA_VERSION)
        return makeError(Errc::VERSION_MISMATCH, "envelope schema version " + std::to_string(root.getSchemaVersion()) +
                                                     ", expected " + std::to_string(schema::SCHEMA_VERSION));
      in.root_ = root;
      if (isPlain(root)) return in;
    }
    // The walk runs on its own reader: the traversal budget it spends is per reader.
    capnp::FlatArrayMessageReader walker(in.words(), options);
    walker.getRoot<Root>().totalSize();  // walks every pointer once, within the traversal and nesting limits
    in.walked_ = true;
  } catch (const kj::Exception& e) {
    return makeError(Errc::PROTOCOL_VIOLATION, std::string("malformed message: ") + e.getDescription().cStr());
  }
  return in;
}

Result<Inbound> Inbound::copyEnvelope(const uint8_t* src, size_t n, const capnp::ReaderOptions& options) {
  if (n == 0 || n % sizeof(capnp::word) != 0)
    return makeError(Errc::PROTOCOL_VIOLATION, "envelope size " + std::to_string(n) + " is not a whole number of words");
  Inbound in;
  in.words_ = kj::heapArray<capnp::word>(n / sizeof(capnp::word));
  std::memcpy(in.words_.begin(), src, n);
  in.bytes_ = n;
  return validate<schema::Envelope>(std::move(in), options);
}

Result<Inbound> Inbound::mapEnvelope(UniqueFd fd, uint64_t n, const capnp::ReaderOptions& options) {
  if (n == 0 || n % sizeof(capnp::word) != 0)
    return makeError(Errc::PROTOCOL_VIOLATION, "out-of-line size is not a whole number of words");
  auto seals = shm::getSeals(fd.get());
  if (!seals) return makeError(Errc::PROTOCOL_VIOLATION, "out-of-line fd is not a memfd");
  if ((*seals & SEALS_IMMUTABLE) != SEALS_IMMUTABLE)
    return makeError(Errc::PROTOCOL_VIOLATION, "out-of-line memfd is not sealed immutable");
  auto size = shm::fileSize(fd.get());
  if (!size || *size < n) return makeError(Errc::PROTOCOL_VIOLATION, "out-of-line memfd smaller than announced");
  auto m = shm::Mapping::map(fd.get(), n, shm::Access::READ_ONLY);
  if (!m) return m.error();
  Inbound in;
  in.mapping_ = std::make_shared<shm::Mapping>(std::move(*m));
  in.bytes_ = n;
  return validate<schema::Envelope>(std::move(in), options);
}

Result<Inbound> Inbound::adoptControl(kj::Array<capnp::word> words, const capnp::ReaderOptions& options) {
  Inbound in;
  in.bytes_ = words.size() * sizeof(capnp::word);
  in.words_ = std::move(words);
  return validate<schema::Control>(std::move(in), options);
}

size_t encodedBytes(capnp::MessageBuilder& message) {
  auto segments = message.getSegmentsForOutput();
  if (segments.size() == 1) return (1 + segments[0].size()) * sizeof(capnp::word);  // table + segment
  return capnp::computeSerializedSizeInWords(message) * sizeof(capnp::word);
}

void encodeInto(capnp::MessageBuilder& message, uint8_t* dst, size_t bytes) {
  auto segments = message.getSegmentsForOutput();
  if (segments.size() == 1) {
    SWIPC_REQUIRE((1 + segments[0].size()) * sizeof(capnp::word) <= bytes, "encodeInto: destination too small");
    // The standard framing for one segment, without the generic stream machinery: a table word
    // {segment count - 1 = 0, segment size in words}, then the segment.
    const uint32_t table[2] = {0, static_cast<uint32_t>(segments[0].size())};
    std::memcpy(dst, table, sizeof table);
    std::memcpy(dst + sizeof table, segments[0].begin(), segments[0].size() * sizeof(capnp::word));
    return;
  }
  kj::ArrayOutputStream out(kj::arrayPtr(reinterpret_cast<kj::byte*>(dst), bytes));
  capnp::writeMessage(out, message);
}

Result<UniqueFd> sealedMemfdOf(const struct iovec* parts, size_t count, size_t bytes) {
  // Written with pwritev, not through a mapping: the kernel copies into the memfd's pages, and
  // the writer never takes a page fault per 4 KiB nor an munmap (a TLB shootdown on every other
  // core) per message. Large replies (matchAll of thousands of clients) go out this way.
  auto fd = shm::createMemfd("swipc-ool", 0);
  if (!fd) return fd.error();
  std::vector<struct iovec> left(parts, parts + count);
  size_t first = 0, written = 0;
  while (written < bytes) {
    ssize_t n = ::pwritev(fd->get(), left.data() + first, static_cast<int>(left.size() - first),
                          static_cast<off_t>(written));
    if (n < 0) {
      if (errno == EINTR) continue;
      return sysError("pwritev out-of-line memfd");
    }
    if (n == 0) return makeError(Errc::SYSTEM, "pwritev out-of-line memfd wrote nothing");
    written += static_cast<size_t>(n);
    for (size_t k = static_cast<size_t>(n); k > 0 && first < left.size();) {
      size_t take = std::min(k, left[first].iov_len);
      left[first].iov_base = static_cast<uint8_t*>(left[first].iov_base) + take;
      left[first].iov_len -= take;
      k -= take;
      if (left[first].iov_len == 0) ++first;
    }
  }
  auto s = shm::addSeals(fd->get(), SEALS_IMMUTABLE);
  if (!s) return s.error();
  return std::move(*fd);
}

Result<UniqueFd> encodeToSealedMemfd(capnp::MessageBuilder& message, size_t bytes) {
  auto segments = message.getSegmentsForOutput();
  // The standard framing: a table {segment count - 1, each segment's size in words, padding to
  // a word}, then the segments as they are.
  std::vector<uint32_t> table((segments.size() + 2) & ~size_t{1}, 0);
  table[0] = static_cast<uint32_t>(segments.size() - 1);
  for (size_t k = 0; k < segments.size(); ++k) table[k + 1] = static_cast<uint32_t>(segments[k].size());
  std::vector<struct iovec> parts;
  parts.reserve(segments.size() + 1);
  parts.push_back({table.data(), table.size() * sizeof(uint32_t)});
  size_t total = parts.back().iov_len;
  for (auto seg : segments) {
    parts.push_back({const_cast<capnp::word*>(seg.begin()), seg.size() * sizeof(capnp::word)});
    total += parts.back().iov_len;
  }
  SWIPC_REQUIRE(total == bytes, "encodeToSealedMemfd: size differs from encodedBytes");
  return sealedMemfdOf(parts.data(), parts.size(), bytes);
}

}  // namespace swipc::wire
