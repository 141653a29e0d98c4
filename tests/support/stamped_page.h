// StampedPage: a page_client `script` page whose stdout a thread reads, stamping each line on
// arrival (so an event's time is right even while the test waits on something else). Tests that
// measure timing between reports (Background Sync's back-off, periodic intervals) build on it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "process.h"

namespace swipc::testing {

/// One line a page printed and when this process read it.
struct Stamped {
  nlohmann::json j;
  TestClock::time_point at;
};

class StampedPage {
 public:
  using json = nlohmann::json;
  using milliseconds = std::chrono::milliseconds;
  static constexpr milliseconds DEFAULT_TIMEOUT{5000};

  StampedPage(const std::string& runtimeDir, const std::string& scope, std::vector<std::string> extraArgs = {}) {
    std::vector<std::string> argv{pageClientPath(), "--scope", scope, "--runtime-dir", runtimeDir};
    argv.insert(argv.end(), extraArgs.begin(), extraArgs.end());
    argv.push_back("script");
    ChildProcess::Options o;
    o.pipeStdin = true;
    o.pipeStdout = true;
    proc_ = ChildProcess(argv, o);
    reader_ = std::thread([this] { readLoop(); });
  }
  ~StampedPage() {
    stop_ = true;
    proc_.signal(SIGKILL);
    reader_.join();
  }
  StampedPage(const StampedPage&) = delete;
  StampedPage& operator=(const StampedPage&) = delete;

  ChildProcess& process() { return proc_; }
  void send(const json& op) { proc_.writeLine(op.dump()); }

  /// The next line not taken yet for which `pred` holds (taken now); nullopt at the timeout.
  std::optional<Stamped> take(const std::function<bool(const json&)>& pred, milliseconds timeout = DEFAULT_TIMEOUT) {
    std::unique_lock lock(mu_);
    const auto deadline = TestClock::now() + timeout;
    size_t i = 0;
    for (;;) {
      for (; i < lines_.size(); ++i) {
        if (!taken_[i] && pred(lines_[i].j)) {
          taken_[i] = true;
          return lines_[i];
        }
      }
      if (eof_ || TestClock::now() >= deadline) return std::nullopt;
      cv_.wait_until(lock, deadline);
    }
  }
  /// Every line so far.
  std::vector<Stamped> lines() const {
    std::lock_guard lock(mu_);
    return lines_;
  }
  /// Lines [from, end) read so far.
  std::vector<Stamped> linesFrom(size_t from) const {
    std::lock_guard lock(mu_);
    if (from >= lines_.size()) return {};
    return {lines_.begin() + static_cast<long>(from), lines_.end()};
  }
  /// Waits until more than `n` lines were read; false at the deadline or end of output.
  bool waitMoreThan(size_t n, TestClock::time_point deadline) {
    std::unique_lock lock(mu_);
    return cv_.wait_until(lock, deadline, [&] { return lines_.size() > n || eof_; }) && lines_.size() > n;
  }

  /// The "attached" line; true when it came and said controlled == `controlled`.
  bool attached(bool controlled = true) {
    auto a = take([](const json& j) { return j.value("event", "") == "attached"; }, std::chrono::seconds(10));
    return a && a->j.value("controlled", !controlled) == controlled;
  }
  /// Sends `op` with a fresh id without waiting for its answer; the id.
  std::string sendWithId(json op) {
    const std::string id = "r" + std::to_string(nextId_++);
    op["id"] = id;
    send(op);
    return id;
  }
  /// Sends `op` with a fresh id; its ok / error line.
  std::optional<json> request(json op, milliseconds timeout = std::chrono::seconds(10)) {
    const std::string id = sendWithId(std::move(op));
    auto r = take(
        [&](const json& j) {
          auto ev = j.value("event", "");
          return (ev == "ok" || ev == "error") && j.contains("id") && j["id"] == id;
        },
        timeout);
    if (!r) return std::nullopt;
    return r->j;
  }
  /// The "tags" of sync.getTags / periodicSync.getTags (null json when the op failed).
  json tags(const std::string& op = "sync.getTags") {
    auto r = request({{"op", op}});
    if (!r || r->value("event", "") != "ok" || !r->contains("tags")) return json();
    return (*r)["tags"];
  }
  /// The reply data of messageSW (null json when none came).
  json messageSW(const json& data) {
    auto r = request({{"op", "messageSW"}, {"data", data}});
    if (!r || r->value("event", "") != "ok") return json();
    return r->value("data", json());
  }
  /// A delivery on the BroadcastChannel object named "log" (the tests' sync-log observer).
  static bool isReport(const json& j) {
    return j.value("event", "") == "bc.message" && j.value("bc", "") == "log" && j.contains("data") &&
           j["data"].is_object();
  }

 private:
  void readLoop() {
    using namespace std::chrono_literals;
    while (!stop_) {
      const auto t0 = TestClock::now();
      auto line = proc_.readLine(50ms);
      const auto now = TestClock::now();
      if (!line) {
        if (now - t0 < 40ms) break;  // returned before its timeout: end of file
        continue;
      }
      auto j = json::parse(*line, nullptr, false);
      if (j.is_discarded()) continue;
      {
        std::lock_guard lock(mu_);
        lines_.push_back({std::move(j), now});
        taken_.push_back(false);
      }
      cv_.notify_all();
    }
    {
      std::lock_guard lock(mu_);
      eof_ = true;
    }
    cv_.notify_all();
  }

  ChildProcess proc_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Stamped> lines_;
  std::vector<bool> taken_;
  bool eof_ = false;
  std::atomic<bool> stop_{false};
  std::thread reader_;
  int nextId_ = 1;
};

}  // namespace swipc::testing
