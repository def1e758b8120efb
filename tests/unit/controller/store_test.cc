#include "controller/store.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>

namespace ballast::controller {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/ballast-store-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    store_ = open();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::unique_ptr<Store> open() {
    std::string error;
    auto store = Store::open(dir_ + "/controller.db", &error);
    EXPECT_NE(store, nullptr) << error;
    return store;
  }

  std::string dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreTest, RevisionOnlyGrowsAndSurvivesReopen) {
  EXPECT_EQ(store_->revision(), 0);
  {
    Store::Transaction t(*store_);
    EXPECT_EQ(store_->bumpRevision(), 1);
    EXPECT_EQ(store_->bumpRevision(), 2);
    t.commit();
  }
  store_ = open();
  EXPECT_EQ(store_->revision(), 2);
}

TEST_F(StoreTest, UncommittedTransactionIsRolledBack) {
  {
    Store::Transaction t(*store_);
    store_->bumpRevision();
    store_->put({"pools", "web", 1, {{"name", "web"}}});
  }
  EXPECT_EQ(store_->revision(), 0);
  EXPECT_FALSE(store_->get("pools", "web"));
}

TEST_F(StoreTest, ObjectsAreKeptByKindAndListedByName) {
  store_->put({"pools", "b", 3, {{"name", "b"}, {"lb_algorithm", "random_two_choices"}}});
  store_->put({"pools", "a", 4, {{"name", "a"}}});
  store_->put({"virtual_services", "a", 5, {{"name", "a"}}});
  auto pools = store_->list("pools");
  ASSERT_EQ(pools.size(), 2u);
  EXPECT_EQ(pools[0].name, "a");
  EXPECT_EQ(pools[1].name, "b");
  EXPECT_EQ(pools[1].version, 3);
  EXPECT_EQ(pools[1].body["lb_algorithm"], "random_two_choices");
  store_->remove("pools", "a");
  EXPECT_FALSE(store_->get("pools", "a"));
  EXPECT_TRUE(store_->get("virtual_services", "a"));
  store_ = open();
  EXPECT_EQ(store_->get("pools", "b")->version, 3);
}

TEST_F(StoreTest, EventsFilterByTypeObjectAndSinceId) {
  int64_t first = store_->addEvent("se_joined", "ses/se1", "se1 joined").id;
  store_->addEvent("vs_placed", "virtual_services/web", "web placed on se1", {{"ses", {"se1"}}});
  store_->addEvent("se_lost", "ses/se1", "se1 lost");
  EXPECT_EQ(store_->events({}).size(), 3u);
  auto lost = store_->events({"se_lost", "", -1, 100});
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].message, "se1 lost");
  // A bare name matches the object in any kind.
  EXPECT_EQ(store_->events({"", "se1", -1, 100}).size(), 2u);
  EXPECT_EQ(store_->events({"", "virtual_services/web", -1, 100})[0].details["ses"][0], "se1");
  auto after = store_->events({"", "", first, 100});
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0].type, "vs_placed");
  // Without since_id: the newest ones, newest last.
  auto latest = store_->events({"", "", -1, 2});
  ASSERT_EQ(latest.size(), 2u);
  EXPECT_EQ(latest[0].type, "vs_placed");
  EXPECT_EQ(latest[1].type, "se_lost");
  EXPECT_LT(latest[0].id, latest[1].id);
  EXPECT_EQ(latest[1].time.size(), 24u);  // 2026-01-01T00:00:00.000Z
}

TEST_F(StoreTest, ServiceEnginesAndPlacementSurviveReopen) {
  SeRecord se;
  se.name = "se1";
  se.address = "10.0.0.1";
  se.group = "blue";
  se.state = "lost";
  se.acked_revision = 4;
  se.config_revision = 5;
  se.config = {{"virtual_services", Json::array()}};
  se.last_report = {{"acked_revision", 4}};
  store_->putSe(se);
  store_->setPlacement({{"web", {"se1", "se2"}}, {"api", {"se2"}}});
  store_ = open();
  auto loaded = store_->se("se1");
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->group, "blue");
  EXPECT_EQ(loaded->state, "lost");
  EXPECT_EQ(loaded->acked_revision, 4);
  EXPECT_EQ(loaded->config_revision, 5);
  EXPECT_EQ(loaded->config, se.config);
  EXPECT_EQ(loaded->last_report, se.last_report);
  Placement expected{{"api", {"se2"}}, {"web", {"se1", "se2"}}};
  EXPECT_EQ(store_->placement(), expected);
  store_->setPlacement({});
  EXPECT_TRUE(store_->placement().empty());
}

}  // namespace
}  // namespace ballast::controller
