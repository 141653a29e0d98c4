#include "core/log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace swipc::core {

namespace {

bool isControl(unsigned char c) { return c < 0x20 || c == 0x7f; }

template <typename Out>
void appendEscaped(std::string_view text, Out& out) {
  static constexpr char HEX[] = "0123456789abcdef";
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (!isControl(c)) {
      out.push_back(ch);
      continue;
    }
    out.push_back('\\');
    switch (c) {
      case '\n': out.push_back('n'); break;
      case '\r': out.push_back('r'); break;
      case '\t': out.push_back('t'); break;
      default:
        out.push_back('x');
        out.push_back(HEX[c >> 4]);
        out.push_back(HEX[c & 0xf]);
    }
  }
}

/// The `%*` pattern flag: the message, escaped. Escaping at the formatter covers every call
/// site, including ones added later that log a client's string without thinking of it.
class EscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    appendEscaped(std::string_view(msg.payload.data(), msg.payload.size()), dest);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<EscapedMessage>(); }
};

void usePattern(spdlog::logger& logger, const std::string& prefix) {
  auto f = std::make_unique<spdlog::pattern_formatter>();
  f->add_flag<EscapedMessage>('*').set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ " + prefix + "[%P] %*");
  logger.set_formatter(std::move(f));
}

std::shared_ptr<spdlog::logger>& current() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = spdlog::stderr_logger_mt("swipc");
    usePattern(*l, "swipc");
    l->set_level(spdlog::level::warn);
    return l;
  }();
  return logger;
}
}  // namespace

std::string escapeLogText(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  appendEscaped(text, out);
  return out;
}

spdlog::logger& log() { return *current(); }

Result<void> initLogging(const std::string& name, const std::string& level) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off")
    return makeError(Errc::TYPE, "unknown log level '" + level + "'");
  auto logger = spdlog::stderr_logger_mt(name + "-" + std::to_string(::getpid()));
  usePattern(*logger, name);
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  current() = logger;
  return {};
}

}  // namespace swipc::core
