// Which service engines serve which virtual services (DESIGN.md, "A distributed service").
// Pure logic: the controller calls place() whenever SEs, virtual services or groups change and
// stores the result; nothing here does I/O.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ballast::controller {

struct SeView {
  std::string name;
  std::string group;         // its SE group
  bool alive = true;         // false: lost (missed heartbeats); it keeps nothing
  uint64_t connections = 0;  // as last reported: breaks ties between equally loaded SEs
};

struct VsView {
  std::string name;
  std::string group;  // the SE group it is placed in
};

struct GroupView {
  std::string name;
  uint32_t max_vs_per_se = 10;
  uint32_t min_se_per_vs = 1;
  uint32_t spares = 0;  // SEs kept empty while the others have room
};

// virtual service -> the SEs serving it (names, sorted). Virtual services with no SE are absent.
using Placement = std::map<std::string, std::vector<std::string>>;

struct PlacementResult {
  Placement placement;
  // One line per virtual service that got fewer SEs than its group's min_se_per_vs, e.g.
  // "web: 1 of 2 SEs (group default: no other SE with room)".
  std::vector<std::string> shortfalls;
};

// The new placement, from the current one. Deterministic (same input, same output). Rules:
// - a virtual service stays on the alive SEs of its group it is on now (never moved without
//   cause), up to min_se_per_vs of them;
// - it is removed from lost SEs, from SEs of another group, and from SEs when the virtual service
//   or its group is gone;
// - missing places are filled with the least loaded alive SEs of its group (fewest virtual
//   services, then fewest connections, then name), never one that already serves it, never one
//   at max_vs_per_se;
// - `spares` SEs of a group (the emptiest, by name) are used only when no other SE has room;
// - an SE's virtual services never exceed max_vs_per_se (extra ones, in name order, move off).
// A virtual service whose group is not in `groups` uses the defaults of GroupView.
PlacementResult place(const std::vector<SeView>& ses, const std::vector<VsView>& virtual_services,
                      const std::vector<GroupView>& groups, const Placement& current);

}  // namespace ballast::controller
