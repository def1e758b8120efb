#include "controller/placement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

namespace ballast::controller {
namespace {

using Names = std::vector<std::string>;

SeView se(const std::string& name, const std::string& group = "default", uint64_t connections = 0,
          bool alive = true) {
  SeView view;
  view.name = name;
  view.group = group;
  view.connections = connections;
  view.alive = alive;
  return view;
}

VsView vs(const std::string& name, const std::string& group = "default") { return {name, group}; }

GroupView group(const std::string& name, uint32_t max_vs_per_se, uint32_t min_se_per_vs,
                uint32_t spares = 0) {
  GroupView view;
  view.name = name;
  view.max_vs_per_se = max_vs_per_se;
  view.min_se_per_vs = min_se_per_vs;
  view.spares = spares;
  return view;
}

std::vector<VsView> services(int count, const std::string& group_name = "default") {
  std::vector<VsView> list;
  for (int i = 0; i < count; ++i) list.push_back(vs("vs" + std::to_string(i), group_name));
  return list;
}

// SE -> how many virtual services it serves.
std::map<std::string, size_t> counts(const Placement& placement) {
  std::map<std::string, size_t> result;
  for (const auto& [vs_name, se_names] : placement) {
    for (const std::string& name : se_names) ++result[name];
  }
  return result;
}

TEST(PlacementTest, EmptyInputsGiveEmptyPlacement) {
  PlacementResult result = place({}, {}, {}, {});
  EXPECT_TRUE(result.placement.empty());
  EXPECT_TRUE(result.shortfalls.empty());
}

TEST(PlacementTest, InitialSpreadByCountThenConnectionsThenName) {
  // c has fewer connections than a and b, so it takes the first; then a and b by name.
  std::vector<SeView> ses = {se("b", "default", 50), se("a", "default", 50),
                             se("c", "default", 10)};
  PlacementResult result = place(ses, services(3), {}, {});
  EXPECT_EQ(result.placement.at("vs0"), Names{"c"});
  EXPECT_EQ(result.placement.at("vs1"), Names{"a"});
  EXPECT_EQ(result.placement.at("vs2"), Names{"b"});
  EXPECT_TRUE(result.shortfalls.empty());
}

TEST(PlacementTest, SpreadsEvenly) {
  std::vector<SeView> ses = {se("a"), se("b"), se("c")};
  PlacementResult result = place(ses, services(9), {}, {});
  EXPECT_EQ(counts(result.placement),
            (std::map<std::string, size_t>{{"a", 3}, {"b", 3}, {"c", 3}}));
}

TEST(PlacementTest, FewestVirtualServicesBeatFewestConnections) {
  // a already serves one (sticky); b, although busier in connections, serves none.
  std::vector<SeView> ses = {se("a", "default", 0), se("b", "default", 1000)};
  PlacementResult result = place(ses, {vs("old"), vs("new")}, {}, {{"old", {"a"}}});
  EXPECT_EQ(result.placement.at("old"), Names{"a"});
  EXPECT_EQ(result.placement.at("new"), Names{"b"});
}

TEST(PlacementTest, MinSePerVsGivesDistinctSes) {
  std::vector<SeView> ses = {se("a"), se("b"), se("c")};
  PlacementResult result = place(ses, services(3), {group("default", 10, 2)}, {});
  for (const auto& [vs_name, se_names] : result.placement) {
    ASSERT_EQ(se_names.size(), 2u) << vs_name;
    EXPECT_NE(se_names[0], se_names[1]);
    EXPECT_TRUE(std::is_sorted(se_names.begin(), se_names.end()));
  }
  EXPECT_EQ(counts(result.placement),
            (std::map<std::string, size_t>{{"a", 2}, {"b", 2}, {"c", 2}}));
  EXPECT_TRUE(result.shortfalls.empty());
}

TEST(PlacementTest, NeverAboveMaxVsPerSeAndShortfallsReported) {
  std::vector<SeView> ses = {se("a"), se("b")};
  PlacementResult result = place(ses, services(5), {group("default", 2, 1)}, {});
  for (const auto& [name, count] : counts(result.placement)) EXPECT_LE(count, 2u) << name;
  EXPECT_EQ(result.placement.size(), 4u);
  EXPECT_EQ(result.placement.count("vs4"), 0u);  // absent: no SE
  ASSERT_EQ(result.shortfalls.size(), 1u);
  EXPECT_EQ(result.shortfalls[0], "vs4: 0 of 1 SEs (group default: no other SE with room)");
}

TEST(PlacementTest, ShortfallWhenGroupHasTooFewSes) {
  PlacementResult result = place({se("a")}, {vs("web")}, {group("default", 10, 2)}, {});
  EXPECT_EQ(result.placement.at("web"), Names{"a"});
  EXPECT_EQ(result.shortfalls, Names{"web: 1 of 2 SEs (group default: no other SE with room)"});
}

TEST(PlacementTest, ShortfallWhenGroupHasNoAliveSe) {
  std::vector<SeView> ses = {se("a", "edge", 0, false), se("b", "default")};
  PlacementResult result = place(ses, {vs("web", "edge")}, {group("edge", 10, 1)}, {});
  EXPECT_TRUE(result.placement.empty());
  EXPECT_EQ(result.shortfalls, Names{"web: 0 of 1 SEs (group edge: no alive SE in the group)"});
}

TEST(PlacementTest, ExistingPlacementOverMaxMovesLaterNamesOff) {
  // max lowered to 1: a keeps vs0 (first by name), vs1 moves to b.
  std::vector<SeView> ses = {se("a"), se("b")};
  Placement current = {{"vs0", {"a"}}, {"vs1", {"a"}}};
  PlacementResult result = place(ses, services(2), {group("default", 1, 1)}, current);
  EXPECT_EQ(result.placement.at("vs0"), Names{"a"});
  EXPECT_EQ(result.placement.at("vs1"), Names{"b"});
}

TEST(PlacementTest, MinLoweredTrimsExtraSes) {
  std::vector<SeView> ses = {se("a"), se("b")};
  PlacementResult result = place(ses, {vs("web")}, {}, {{"web", {"a", "b"}}});
  EXPECT_EQ(result.placement.at("web"), Names{"a"});
}

TEST(PlacementTest, StickyWhenNothingChanged) {
  std::vector<SeView> ses = {se("a"), se("b"), se("c")};
  // An uneven placement that a fresh run would not produce; it must stay as it is.
  Placement current = {{"vs0", {"c"}}, {"vs1", {"c"}}, {"vs2", {"c"}}};
  PlacementResult result = place(ses, services(3), {}, current);
  EXPECT_EQ(result.placement, current);
}

TEST(PlacementTest, StickyWhenLoadChanges) {
  std::vector<SeView> ses = {se("a", "default", 0), se("b", "default", 0)};
  PlacementResult first = place(ses, services(2), {}, {});
  ses[0].connections = 100000;  // a busy SE is not a reason to move
  PlacementResult second = place(ses, services(2), {}, first.placement);
  EXPECT_EQ(second.placement, first.placement);
}

TEST(PlacementTest, NewVirtualServiceDoesNotMoveOthers) {
  std::vector<SeView> ses = {se("a"), se("b")};
  PlacementResult first = place(ses, services(2), {}, {});
  std::vector<VsView> more = services(2);
  more.push_back(vs("added"));
  PlacementResult second = place(ses, more, {}, first.placement);
  EXPECT_EQ(second.placement.at("vs0"), first.placement.at("vs0"));
  EXPECT_EQ(second.placement.at("vs1"), first.placement.at("vs1"));
  EXPECT_EQ(second.placement.at("added").size(), 1u);
}

TEST(PlacementTest, LostSeServicesMoveAndReturningSeGetsNothingBack) {
  std::vector<SeView> ses = {se("a"), se("b"), se("c")};
  Placement current = {{"vs0", {"a"}}, {"vs1", {"b"}}, {"vs2", {"c"}}};

  ses[0].alive = false;
  PlacementResult lost = place(ses, services(3), {}, current);
  EXPECT_EQ(counts(lost.placement).count("a"), 0u);
  EXPECT_EQ(lost.placement.at("vs1"), Names{"b"});
  EXPECT_EQ(lost.placement.at("vs2"), Names{"c"});
  EXPECT_EQ(lost.placement.at("vs0"), Names{"b"});  // equal load: by name
  EXPECT_TRUE(lost.shortfalls.empty());

  ses[0].alive = true;
  PlacementResult back = place(ses, services(3), {}, lost.placement);
  EXPECT_EQ(back.placement, lost.placement);
  EXPECT_EQ(counts(back.placement).count("a"), 0u);
}

TEST(PlacementTest, LostSeWithMinTwoKeepsTheSurvivorAndAddsOne) {
  std::vector<SeView> ses = {se("a"), se("b"), se("c", "default", 0, false)};
  Placement current = {{"web", {"b", "c"}}};
  PlacementResult result = place(ses, {vs("web")}, {group("default", 10, 2)}, current);
  EXPECT_EQ(result.placement.at("web"), (Names{"a", "b"}));
}

TEST(PlacementTest, UnknownSeInCurrentPlacementIsDropped) {
  PlacementResult result = place({se("a")}, {vs("web")}, {}, {{"web", {"gone"}}});
  EXPECT_EQ(result.placement.at("web"), Names{"a"});
}

TEST(PlacementTest, SpareUnusedWhileOthersHaveRoom) {
  std::vector<SeView> ses = {se("a"), se("b"), se("c")};
  PlacementResult result = place(ses, services(4), {group("default", 2, 1, 1)}, {});
  // All empty: the spare is the first by name.
  EXPECT_EQ(counts(result.placement), (std::map<std::string, size_t>{{"b", 2}, {"c", 2}}));
  EXPECT_TRUE(result.shortfalls.empty());
}

TEST(PlacementTest, SpareUsedWhenNoOtherSeHasRoom) {
  std::vector<SeView> ses = {se("a"), se("b"), se("c")};
  PlacementResult result = place(ses, services(5), {group("default", 2, 1, 1)}, {});
  EXPECT_EQ(counts(result.placement),
            (std::map<std::string, size_t>{{"a", 1}, {"b", 2}, {"c", 2}}));
  EXPECT_EQ(result.placement.at("vs4"), Names{"a"});
}

TEST(PlacementTest, SpareTakesOverLostSe) {
  std::vector<SeView> ses = {se("a"), se("b"), se("c")};
  GroupView n_plus_1 = group("default", 2, 1, 1);
  PlacementResult before = place(ses, services(4), {n_plus_1}, {});
  ASSERT_EQ(counts(before.placement).count("a"), 0u);

  ses[1].alive = false;  // b lost: its two move to the spare, c is full
  PlacementResult after = place(ses, services(4), {n_plus_1}, before.placement);
  EXPECT_EQ(counts(after.placement), (std::map<std::string, size_t>{{"a", 2}, {"c", 2}}));
  EXPECT_TRUE(after.shortfalls.empty());
}

TEST(PlacementTest, SparesAreCountedPerGroup) {
  std::vector<SeView> ses = {se("a", "g1"), se("b", "g1"), se("x", "g2"), se("y", "g2")};
  std::vector<GroupView> groups = {group("g1", 10, 1, 1), group("g2", 10, 1, 0)};
  PlacementResult result =
      place(ses, {vs("v1", "g1"), vs("v2", "g1"), vs("w1", "g2"), vs("w2", "g2")}, groups, {});
  EXPECT_EQ(result.placement.at("v1"), Names{"b"});
  EXPECT_EQ(result.placement.at("v2"), Names{"b"});
  EXPECT_EQ(result.placement.at("w1"), Names{"x"});
  EXPECT_EQ(result.placement.at("w2"), Names{"y"});
}

TEST(PlacementTest, OnlySesOfTheVirtualServicesGroup) {
  std::vector<SeView> ses = {se("a", "edge"), se("b", "default"), se("c", "edge")};
  std::vector<GroupView> groups = {group("edge", 10, 2), group("default", 10, 1)};
  PlacementResult result = place(ses, {vs("web", "edge"), vs("api", "default")}, groups, {});
  EXPECT_EQ(result.placement.at("web"), (Names{"a", "c"}));
  EXPECT_EQ(result.placement.at("api"), Names{"b"});
}

TEST(PlacementTest, GroupMismatchMovesTheVirtualService) {
  // web was on b (default); it now belongs to edge: it moves to an edge SE.
  std::vector<SeView> ses = {se("a", "edge"), se("b", "default")};
  PlacementResult result =
      place(ses, {vs("web", "edge")}, {group("edge", 10, 1)}, {{"web", {"b"}}});
  EXPECT_EQ(result.placement.at("web"), Names{"a"});
}

TEST(PlacementTest, SeChangingGroupLosesItsVirtualServices) {
  std::vector<SeView> ses = {se("a", "other"), se("b")};
  PlacementResult result = place(ses, {vs("web")}, {}, {{"web", {"a"}}});
  EXPECT_EQ(result.placement.at("web"), Names{"b"});
}

TEST(PlacementTest, MissingGroupUsesDefaults) {
  std::vector<SeView> ses;
  for (int i = 0; i < 2; ++i) ses.push_back(se("se" + std::to_string(i), "nowhere"));
  PlacementResult result = place(ses, services(25, "nowhere"), {}, {});
  // Defaults: one SE per virtual service, ten per SE.
  EXPECT_EQ(counts(result.placement), (std::map<std::string, size_t>{{"se0", 10}, {"se1", 10}}));
  EXPECT_EQ(result.shortfalls.size(), 5u);
}

TEST(PlacementTest, DeletedVirtualServiceIsRemovedAndFreesRoom) {
  std::vector<SeView> ses = {se("a")};
  Placement current = {{"old", {"a"}}};
  PlacementResult result = place(ses, {vs("new")}, {group("default", 1, 1)}, current);
  EXPECT_EQ(result.placement.count("old"), 0u);
  EXPECT_EQ(result.placement.at("new"), Names{"a"});
  EXPECT_TRUE(result.shortfalls.empty());
}

TEST(PlacementTest, ZeroMinSePerVsPlacesNothing) {
  PlacementResult result = place({se("a")}, {vs("web")}, {group("default", 10, 0)}, {});
  EXPECT_TRUE(result.placement.empty());
  EXPECT_TRUE(result.shortfalls.empty());
}

TEST(PlacementTest, DeterministicRegardlessOfInputOrder) {
  std::vector<SeView> ses = {se("a", "default", 5), se("b", "default", 5), se("c", "default", 1),
                             se("d", "default", 9)};
  std::vector<VsView> list = services(7);
  std::vector<GroupView> groups = {group("default", 3, 2, 1)};
  PlacementResult first = place(ses, list, groups, {});
  std::reverse(ses.begin(), ses.end());
  std::reverse(list.begin(), list.end());
  PlacementResult second = place(ses, list, groups, {});
  EXPECT_EQ(first.placement, second.placement);
  EXPECT_EQ(first.shortfalls, second.shortfalls);
  PlacementResult again = place(ses, list, groups, {});
  EXPECT_EQ(again.placement, second.placement);
}

TEST(PlacementTest, StableUnderRepeatedRuns) {
  std::vector<SeView> ses = {se("a"), se("b"), se("c"), se("d")};
  std::vector<GroupView> groups = {group("default", 3, 2, 1)};
  PlacementResult first = place(ses, services(6), groups, {});
  PlacementResult second = place(ses, services(6), groups, first.placement);
  EXPECT_EQ(second.placement, first.placement);
  EXPECT_EQ(second.shortfalls, first.shortfalls);
}

// Random clusters, changed step by step (SEs lost and back, services added and deleted): the rules
// hold after every step, and placing again without a change changes nothing.
TEST(PlacementTest, RandomChangesKeepTheRules) {
  std::mt19937 random(12345);
  auto pick = [&random](int n) { return static_cast<int>(random() % n); };
  const std::vector<std::string> group_names = {"g0", "g1", "missing"};
  std::vector<GroupView> groups = {group("g0", 3, 2, 1), group("g1", 2, 1, 0)};
  std::vector<SeView> ses;
  for (int i = 0; i < 8; ++i) {
    ses.push_back(
        se("se" + std::to_string(i), group_names[i % 3], static_cast<uint64_t>(pick(100))));
  }
  std::vector<VsView> list;
  for (int i = 0; i < 12; ++i) list.push_back(vs("vs" + std::to_string(i), group_names[pick(3)]));

  Placement current;
  for (int step = 0; step < 300; ++step) {
    switch (pick(4)) {
      case 0:
        ses[pick(8)].alive ^= true;
        break;
      case 1:
        ses[pick(8)].connections = static_cast<uint64_t>(pick(1000));
        break;
      case 2:
        if (!list.empty()) list.erase(list.begin() + pick(static_cast<int>(list.size())));
        break;
      case 3:
        list.push_back(vs("new" + std::to_string(step), group_names[pick(3)]));
        break;
    }
    const PlacementResult result = place(ses, list, groups, current);
    std::map<std::string, const SeView*> by_name;
    for (const SeView& s : ses) by_name[s.name] = &s;
    std::map<std::string, const VsView*> services;
    for (const VsView& v : list) services[v.name] = &v;
    std::map<std::string, size_t> load = counts(result.placement);
    for (const auto& [vs_name, se_names] : result.placement) {
      ASSERT_TRUE(services.count(vs_name)) << "deleted " << vs_name << " placed, step " << step;
      const VsView& v = *services[vs_name];
      const GroupView limits = v.group == "g0"   ? groups[0]
                               : v.group == "g1" ? groups[1]
                                                 : GroupView{};
      EXPECT_LE(se_names.size(), limits.min_se_per_vs);
      EXPECT_EQ(std::set<std::string>(se_names.begin(), se_names.end()).size(), se_names.size());
      for (const std::string& name : se_names) {
        EXPECT_TRUE(by_name[name]->alive) << vs_name << " on lost " << name << ", step " << step;
        EXPECT_EQ(by_name[name]->group, v.group) << vs_name << " on " << name;
        EXPECT_LE(load[name], limits.max_vs_per_se) << name << ", step " << step;
      }
      // What stayed on an alive SE of its group is still there (sticky).
      if (current.count(vs_name)) {
        for (const std::string& name : current.at(vs_name)) {
          if (by_name.count(name) && by_name[name]->alive && by_name[name]->group == v.group) {
            EXPECT_TRUE(std::count(se_names.begin(), se_names.end(), name))
                << vs_name << " moved off " << name << " without cause, step " << step;
          }
        }
      }
    }
    size_t short_of_min = 0;
    for (const auto& [vs_name, v] : services) {
      const uint32_t min = v->group == "g0" ? 2 : 1;
      const auto it = result.placement.find(vs_name);
      if ((it == result.placement.end() ? 0 : it->second.size()) >= min) continue;
      ++short_of_min;
      // Short only when no alive SE of its group has room for it.
      const uint32_t max = v->group == "g0" ? 3 : v->group == "g1" ? 2 : GroupView{}.max_vs_per_se;
      for (const SeView& s : ses) {
        if (!s.alive || s.group != v->group) continue;
        const bool serves = it != result.placement.end() &&
                            std::count(it->second.begin(), it->second.end(), s.name);
        EXPECT_TRUE(serves || load[s.name] >= max)
            << vs_name << " short while " << s.name << " has room, step " << step;
      }
    }
    EXPECT_EQ(result.shortfalls.size(), short_of_min) << "step " << step;
    EXPECT_EQ(place(ses, list, groups, result.placement).placement, result.placement)
        << "not stable, step " << step;
    current = result.placement;
  }
}

}  // namespace
}  // namespace ballast::controller
