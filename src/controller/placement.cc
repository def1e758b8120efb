#include "controller/placement.h"

#include <algorithm>
#include <set>
#include <tuple>

namespace ballast::controller {

namespace {

// The working state of one placement run: who serves what, and each SE's count.
struct Work {
  std::map<std::string, const SeView*> ses;         // by name, first occurrence wins
  std::map<std::string, GroupView> groups;          // by name, defaults filled in on demand
  std::map<std::string, std::set<std::string>> on;  // virtual service -> its SEs
  std::map<std::string, uint32_t> load;             // SE -> virtual services it serves

  const GroupView& group(const std::string& name) {
    auto it = groups.find(name);
    if (it == groups.end()) {
      GroupView defaults;
      defaults.name = name;
      it = groups.emplace(name, defaults).first;
    }
    return it->second;
  }

  void assign(const std::string& vs, const std::string& se) {
    on[vs].insert(se);
    ++load[se];
  }

  void unassign(const std::string& vs, const std::string& se) {
    on[vs].erase(se);
    --load[se];
  }
};

// Keeps what may stay: alive SEs of the virtual service's group, at most min_se_per_vs of them.
void keep_current(Work& work, const std::map<std::string, const VsView*>& services,
                  const Placement& current) {
  for (const auto& [vs_name, se_names] : current) {
    auto vs = services.find(vs_name);
    if (vs == services.end()) continue;  // deleted
    const GroupView& group = work.group(vs->second->group);
    std::set<std::string> sorted(se_names.begin(), se_names.end());
    uint32_t kept = 0;
    for (const std::string& se_name : sorted) {
      if (kept >= group.min_se_per_vs) break;
      auto se = work.ses.find(se_name);
      if (se == work.ses.end() || !se->second->alive) continue;
      if (se->second->group != vs->second->group) continue;
      work.assign(vs_name, se_name);
      ++kept;
    }
  }
}

// An SE over its group's max_vs_per_se keeps the first virtual services by name; the rest move.
void enforce_max(Work& work) {
  std::map<std::string, std::vector<std::string>> served;  // SE -> virtual services, by name
  for (const auto& [vs_name, se_names] : work.on) {
    for (const std::string& se_name : se_names) served[se_name].push_back(vs_name);
  }
  for (const auto& [se_name, vs_names] : served) {
    const uint32_t max = work.group(work.ses.at(se_name)->group).max_vs_per_se;
    for (size_t i = max; i < vs_names.size(); ++i) work.unassign(vs_names[i], se_name);
  }
}

// The `spares` emptiest alive SEs of each group (ties by name), chosen after the sticky step so a
// spare that had to take work is no longer the one held back.
std::set<std::string> pick_spares(Work& work) {
  std::map<std::string, std::vector<const SeView*>> by_group;
  for (const auto& [name, se] : work.ses) {
    if (se->alive) by_group[se->group].push_back(se);
  }
  std::set<std::string> spares;
  for (auto& [group_name, members] : by_group) {
    std::sort(members.begin(), members.end(), [&](const SeView* a, const SeView* b) {
      return std::tie(work.load[a->name], a->name) < std::tie(work.load[b->name], b->name);
    });
    const size_t count = std::min<size_t>(work.group(group_name).spares, members.size());
    for (size_t i = 0; i < count; ++i) spares.insert(members[i]->name);
  }
  return spares;
}

// The least loaded alive SE of the group with room that does not serve `vs` yet; spares only if
// nothing else qualifies. Null if none.
const SeView* pick_se(Work& work, const VsView& vs, const std::set<std::string>& spares) {
  const uint32_t max = work.group(vs.group).max_vs_per_se;
  const std::set<std::string>& serving = work.on[vs.name];
  const SeView* best = nullptr;
  bool best_is_spare = true;
  for (const auto& [name, se] : work.ses) {
    if (!se->alive || se->group != vs.group || serving.count(name) || work.load[name] >= max) {
      continue;
    }
    const bool is_spare = spares.count(name) > 0;
    if (best != nullptr) {
      if (is_spare != best_is_spare) {
        if (is_spare) continue;
      } else if (std::tie(work.load[name], se->connections, name) >=
                 std::tie(work.load[best->name], best->connections, best->name)) {
        continue;
      }
    }
    best = se;
    best_is_spare = is_spare;
  }
  return best;
}

std::string shortfall_line(Work& work, const VsView& vs, size_t got) {
  const GroupView& group = work.group(vs.group);
  bool any_alive = false;
  for (const auto& [name, se] : work.ses) any_alive |= se->alive && se->group == vs.group;
  return vs.name + ": " + std::to_string(got) + " of " + std::to_string(group.min_se_per_vs) +
         " SEs (group " + vs.group + ": " +
         (any_alive ? "no other SE with room" : "no alive SE in the group") + ")";
}

}  // namespace

PlacementResult place(const std::vector<SeView>& ses, const std::vector<VsView>& virtual_services,
                      const std::vector<GroupView>& groups, const Placement& current) {
  Work work;
  for (const SeView& se : ses) work.ses.emplace(se.name, &se);
  for (const GroupView& group : groups) work.groups.emplace(group.name, group);
  std::map<std::string, const VsView*> services;  // by name: the order everything is decided in
  for (const VsView& vs : virtual_services) services.emplace(vs.name, &vs);

  keep_current(work, services, current);
  enforce_max(work);
  const std::set<std::string> spares = pick_spares(work);

  PlacementResult result;
  for (const auto& [vs_name, vs] : services) {
    const uint32_t wanted = work.group(vs->group).min_se_per_vs;
    while (work.on[vs_name].size() < wanted) {
      const SeView* se = pick_se(work, *vs, spares);
      if (se == nullptr) break;
      work.assign(vs_name, se->name);
    }
    const std::set<std::string>& chosen = work.on[vs_name];
    if (chosen.size() < wanted)
      result.shortfalls.push_back(shortfall_line(work, *vs, chosen.size()));
    if (!chosen.empty()) result.placement[vs_name].assign(chosen.begin(), chosen.end());
  }
  return result;
}

}  // namespace ballast::controller
