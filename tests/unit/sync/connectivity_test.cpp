// sync: Connectivity. `always` is online; `manual` starts online unless told offline and follows
// setOnline, telling its listener on changes only; `auto` finds a default route in a netlink
// route dump (unicast only, any family), agrees with the host's /proc view at start, and follows
// a default route that appears and disappears (in a private network namespace, when the kernel
// lets an unprivileged user make one).
#include "sync/connectivity.h"

#include <gtest/gtest.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "sync_test_util.h"

namespace swipc::sync {
namespace {

using namespace std::chrono_literals;
using testing::runInChild;
using testing::runUntil;

class ConnectivityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loop = core::EventLoop::create();
    ASSERT_TRUE(loop.ok());
    loop_ = std::move(*loop);
  }
  std::unique_ptr<Connectivity> make(ConnectivityMode mode, bool startOffline = false) {
    auto sut = Connectivity::create(*loop_, mode, startOffline, [this](bool online) { changes_.push_back(online); });
    EXPECT_TRUE(sut.ok()) << sut.error().describe();
    return sut.ok() ? std::move(*sut) : nullptr;
  }

  std::unique_ptr<core::EventLoop> loop_;
  std::vector<bool> changes_;
};

// ---- modes ----

TEST(ConnectivityModeTest, ParsesTheThreeNamesAndRefusesOthers) {
  EXPECT_EQ(*parseConnectivityMode("auto"), ConnectivityMode::AUTO);
  EXPECT_EQ(*parseConnectivityMode("always"), ConnectivityMode::ALWAYS);
  EXPECT_EQ(*parseConnectivityMode("manual"), ConnectivityMode::MANUAL);
  auto bad = parseConnectivityMode("sometimes");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, Errc::TYPE);
}

TEST_F(ConnectivityTest, AlwaysIsOnlineAndRefusesSetOnline) {
  auto sut = make(ConnectivityMode::ALWAYS, /*startOffline=*/true);
  EXPECT_TRUE(sut->online());
  auto r = sut->setOnline(false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::INVALID_STATE);
  EXPECT_TRUE(sut->online());
}

TEST_F(ConnectivityTest, ManualStartsOnline) { EXPECT_TRUE(make(ConnectivityMode::MANUAL)->online()); }

TEST_F(ConnectivityTest, ManualStartsOfflineWhenToldTo) {
  EXPECT_FALSE(make(ConnectivityMode::MANUAL, /*startOffline=*/true)->online());
}

TEST_F(ConnectivityTest, ManualSetOnlineTellsTheListenerOnChangesOnly) {
  auto sut = make(ConnectivityMode::MANUAL);
  ASSERT_TRUE(sut->setOnline(true).ok());  // no change
  ASSERT_TRUE(sut->setOnline(false).ok());
  ASSERT_TRUE(sut->setOnline(false).ok());  // no change
  ASSERT_TRUE(sut->setOnline(true).ok());
  EXPECT_EQ(changes_, (std::vector<bool>{false, true}));
  EXPECT_TRUE(sut->online());
}

// ---- reading a route dump ----

/// Appends one netlink message of `type` whose body is `body`.
template <typename Body>
void append(std::vector<uint8_t>& buffer, uint16_t type, const Body& body) {
  nlmsghdr header{};
  header.nlmsg_len = NLMSG_LENGTH(sizeof(Body));
  header.nlmsg_type = type;
  const size_t at = buffer.size();
  buffer.resize(at + NLMSG_ALIGN(header.nlmsg_len));
  std::memcpy(buffer.data() + at, &header, sizeof header);
  std::memcpy(buffer.data() + at + NLMSG_HDRLEN, &body, sizeof body);
}

rtmsg route(uint8_t family, uint8_t dstLen, uint8_t type) {
  rtmsg r{};
  r.rtm_family = family;
  r.rtm_dst_len = dstLen;
  r.rtm_type = type;
  r.rtm_table = RT_TABLE_MAIN;
  return r;
}

bool scan(const std::vector<uint8_t>& buffer, bool& done) {
  auto r = containsDefaultRoute(buffer, done);
  EXPECT_TRUE(r.ok());
  return r.ok() && *r;
}

TEST(DefaultRouteScanTest, AUnicastDefaultRouteOfEitherFamilyCounts) {
  for (uint8_t family : {uint8_t{AF_INET}, uint8_t{AF_INET6}}) {
    std::vector<uint8_t> buffer;
    append(buffer, RTM_NEWROUTE, route(family, 24, RTN_UNICAST));
    append(buffer, RTM_NEWROUTE, route(family, 0, RTN_UNICAST));
    bool done = false;
    EXPECT_TRUE(scan(buffer, done)) << int(family);
    EXPECT_FALSE(done);
  }
}

TEST(DefaultRouteScanTest, UnreachableDefaultsAndNarrowerRoutesDoNotCount) {
  std::vector<uint8_t> buffer;
  append(buffer, RTM_NEWROUTE, route(AF_INET6, 0, RTN_UNREACHABLE));
  append(buffer, RTM_NEWROUTE, route(AF_INET, 0, RTN_BLACKHOLE));
  append(buffer, RTM_NEWROUTE, route(AF_INET, 8, RTN_UNICAST));
  append(buffer, RTM_NEWROUTE, route(AF_INET, 0, RTN_LOCAL));
  bool done = false;
  EXPECT_FALSE(scan(buffer, done));
}

TEST(DefaultRouteScanTest, ReportsTheEndOfTheDumpAndIgnoresWhatFollows) {
  std::vector<uint8_t> buffer;
  append(buffer, NLMSG_DONE, int32_t{0});
  append(buffer, RTM_NEWROUTE, route(AF_INET, 0, RTN_UNICAST));
  bool done = false;
  EXPECT_FALSE(scan(buffer, done));
  EXPECT_TRUE(done);
}

TEST(DefaultRouteScanTest, AnErrorReplyIsASystemError) {
  std::vector<uint8_t> buffer;
  nlmsgerr err{};
  err.error = -EPERM;
  append(buffer, NLMSG_ERROR, err);
  bool done = false;
  auto r = containsDefaultRoute(buffer, done);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::SYSTEM);
}

TEST(DefaultRouteScanTest, ATruncatedMessageIsNotRead) {
  std::vector<uint8_t> buffer;
  append(buffer, RTM_NEWROUTE, route(AF_INET, 0, RTN_UNICAST));
  buffer.resize(buffer.size() - 4);
  bool done = false;
  EXPECT_FALSE(scan(buffer, done));
}

// ---- auto mode against the real kernel ----

/// The host's default route as /proc shows it (main table, routes that are up and not reject).
bool procHasDefaultRoute() {
  std::ifstream v4("/proc/net/route");
  std::string line;
  std::getline(v4, line);  // header
  while (std::getline(v4, line)) {
    std::istringstream in(line);
    std::string iface, dst, gateway, flags, refcnt, use, metric, mask;
    in >> iface >> dst >> gateway >> flags >> refcnt >> use >> metric >> mask;
    if (dst == "00000000" && mask == "00000000" && (std::stoul(flags, nullptr, 16) & 0x1) != 0) return true;
  }
  std::ifstream v6("/proc/net/ipv6_route");
  while (std::getline(v6, line)) {
    std::istringstream in(line);
    std::string dst, dstLen, src, srcLen, nextHop, metric, refcnt, use, flags;
    in >> dst >> dstLen >> src >> srcLen >> nextHop >> metric >> refcnt >> use >> flags;
    const unsigned long f = std::stoul(flags, nullptr, 16);
    const bool up = (f & 0x1) != 0, reject = (f & 0x200) != 0;
    if (dst == std::string(32, '0') && dstLen == "00" && up && !reject) return true;
  }
  return false;
}

TEST_F(ConnectivityTest, AutoAgreesWithTheHostsRoutesAtStart) {
  auto sut = make(ConnectivityMode::AUTO);
  ASSERT_TRUE(sut);
  EXPECT_EQ(sut->online(), procHasDefaultRoute());
  EXPECT_FALSE(sut->setOnline(!sut->online()).ok());  // the host decides
}

constexpr int SKIP_NO_NAMESPACE = 77;
constexpr int SKIP_NO_IP_TOOL = 78;

/// In a new user + network namespace (where we may change routes): root in it, lo down.
bool enterPrivateNetwork() {
  const uid_t uid = ::getuid();
  const gid_t gid = ::getgid();
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) return false;
  std::ofstream("/proc/self/setgroups") << "deny";
  std::ofstream("/proc/self/uid_map") << "0 " << uid << " 1";
  std::ofstream("/proc/self/gid_map") << "0 " << gid << " 1";
  return true;
}

TEST_F(ConnectivityTest, AutoFollowsADefaultRouteAppearingAndDisappearing) {
  const int status = runInChild([] {
    if (!enterPrivateNetwork()) return SKIP_NO_NAMESPACE;
    if (std::system("command -v ip >/dev/null 2>&1") != 0) return SKIP_NO_IP_TOOL;
    auto loop = core::EventLoop::create();
    if (!loop.ok()) return 10;
    std::vector<bool> changes;
    auto sut = Connectivity::create(**loop, ConnectivityMode::AUTO, false, [&](bool online) { changes.push_back(online); });
    if (!sut.ok()) return 11;
    if ((*sut)->online()) return 12;  // a fresh namespace has no route at all
    if (std::system("ip link set lo up && ip route add default dev lo") != 0) return SKIP_NO_NAMESPACE;
    if (!runUntil(**loop, [&] { return (*sut)->online(); }, 5s)) return 13;
    if (std::system("ip route del default dev lo") != 0) return 14;
    if (!runUntil(**loop, [&] { return !(*sut)->online(); }, 5s)) return 15;
    if (changes != std::vector<bool>{true, false}) return 16;
    return (*sut)->routeChanges() >= 2 ? 0 : 17;
  });
  ASSERT_TRUE(WIFEXITED(status)) << "child status " << status;
  if (WEXITSTATUS(status) == SKIP_NO_NAMESPACE) GTEST_SKIP() << "no unprivileged network namespace here";
  if (WEXITSTATUS(status) == SKIP_NO_IP_TOOL) GTEST_SKIP() << "no `ip` (iproute2) here";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "12: online at start, 13: never online, 15: never offline again, "
                                       "16: listener calls wrong, 17: changes not counted";
}

}  // namespace
}  // namespace swipc::sync
