// page: the feature seam. A feature registers its envelope kinds with the page's op table and
// hears the connection's lifecycle in the order features were added; get() makes one on first use.
#include "page/feature.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "page_rig.h"

namespace swipc::page {
namespace {

using testing::PageRig;

/// Records what it is told.
class Recorder final : public PageFeature {
 public:
  explicit Recorder(PageContext& ctx) : ctx_(ctx) {}
  void reattached() override { log.push_back("reattached"); }
  void detaching() override { log.push_back(ctx_.link.attached() ? "detaching(attached)" : "detaching(gone)"); }
  void closing() override { log.push_back("closing"); }
  std::vector<std::string> log;

 private:
  PageContext& ctx_;
};

class Second final : public PageFeature {
 public:
  explicit Second(std::vector<std::string>& log) : log_(log) {}
  void closing() override { log_.push_back("second closing"); }

 private:
  std::vector<std::string>& log_;
};

TEST(FeatureSetTest, GetMakesTheFeatureOnceWithThePagesContext) {
  PageRig rig;
  auto& set = rig.page->features();
  EXPECT_EQ(set.find<Recorder>(), nullptr);
  Recorder& a = set.get<Recorder>();
  Recorder& b = set.get<Recorder>();
  EXPECT_EQ(&a, &b);
  EXPECT_EQ(set.find<Recorder>(), &a);
  EXPECT_EQ(&set.context().sender, &rig.page->sender());
  EXPECT_EQ(&set.context().ops, &rig.page->ops());
}

TEST(FeatureSetTest, LifecycleReachesFeaturesInTheOrderAdded) {
  PageRig rig;
  auto& set = rig.page->features();
  Recorder& first = set.get<Recorder>();
  set.add(std::make_unique<Second>(first.log));
  set.closing();
  EXPECT_EQ(first.log, (std::vector<std::string>{"closing", "second closing"}));
}

TEST(FeatureSetTest, DetachingRunsWhileTheConnectionIsStillThere) {
  PageRig rig;
  Recorder& rec = rig.page->features().get<Recorder>();
  rig.start();
  rig.daemon.hangUp();
  ASSERT_TRUE(rig.runUntil([&] { return !rig.page->link().attached(); }));
  EXPECT_EQ(rec.log, (std::vector<std::string>{"detaching(attached)"}));
}

TEST(FeatureSetTest, ReattachedRunsAfterTheDaemonComesBack) {
  PageRig rig;
  Recorder& rec = rig.page->features().get<Recorder>();
  rig.start();
  rig.daemon.hangUp();
  ASSERT_TRUE(rig.runUntil([&] { return rec.log.size() == 2; }));
  EXPECT_EQ(rec.log, (std::vector<std::string>{"detaching(attached)", "reattached"}));
  EXPECT_TRUE(rig.page->link().attached());
}

TEST(FeatureSetTest, AFeatureHandlesTheKindsItRegisters) {
  PageRig rig;
  struct Focus final : PageFeature {
    explicit Focus(PageContext& ctx) {
      // A kind no module of the page owns (BcLeave travels the other way): the seam is open.
      ctx.ops.on(schema::Envelope::BC_LEAVE, [this](schema::Envelope::Reader env, const auto&) {
        left = env.getBcLeave().getObjectId();
      });
    }
    uint32_t left = 0;
  };
  Focus& f = rig.page->features().get<Focus>();
  rig.start();
  rig.daemon.send([](schema::Envelope::Builder e) { e.initBcLeave().setObjectId(42); });
  ASSERT_TRUE(rig.runUntil([&] { return f.left == 42; }));
}

}  // namespace
}  // namespace swipc::page
