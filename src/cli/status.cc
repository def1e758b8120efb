#include "cli/status.h"

#include <algorithm>
#include <set>

namespace ballast::cli {

namespace {

// One SE's view of a server: "up", "down", or with a reason when the SE gives one.
std::string health_word(const Json& health) {
  if (health.is_object() && health.contains("state")) {
    std::string word = cell_text(health["state"]);
    if (health.contains("reason") && health["reason"].is_string()) {
      word += " (" + health["reason"].get<std::string>() + ")";
    }
    return word;
  }
  return cell_text(health);
}

// The keys of an object, or nothing.
std::vector<std::string> keys(const Json& value) {
  std::vector<std::string> names;
  if (value.is_object()) {
    for (const auto& [key, item] : value.items()) names.push_back(key);
  }
  return names;
}

// One row per server; one column per SE that reported it ("health": {"se-1": "up", ...}).
std::string servers_table(const Json& servers) {
  std::set<std::string> reporters;
  for (const Json& server : servers) {
    for (const std::string& se : keys(server.value("health", Json()))) reporters.insert(se);
  }
  std::vector<Column> columns = {field("SERVER", "address")};
  if (reporters.empty()) {
    columns.push_back(
        {"HEALTH", [](const Json&) { return std::string("unknown (no SE report)"); }});
  }
  for (const std::string& se : reporters) {
    columns.push_back({se, [se](const Json& server) {
                         const Json health = server.value("health", Json());
                         return health.is_object() && health.contains(se) ? health_word(health[se])
                                                                          : std::string("-");
                       }});
  }
  // The controller's health score of each server, from what every SE reports.
  columns.push_back({"SCORE", [](const Json& server) {
                       const Json score = server.value("score", Json());
                       if (!score.is_object()) return std::string("-");
                       return cell_text(score.value("score", Json())) + " " +
                              cell_text(score.value("band", Json()));
                     }});
  return render_table(columns, servers);
}

std::string indent(const std::string& text) {
  std::string out;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = std::min(text.find('\n', start), text.size());
    out += "  " + text.substr(start, end - start) + "\n";
    start = end + 1;
  }
  return out;
}

}  // namespace

std::string render_vs_status(const std::string& name, const Json& status) {
  if (!status.is_object()) return render_yaml(status);
  std::set<std::string> shown;
  auto take = [&](const std::string& key) {
    shown.insert(key);
    return status.value(key, Json());
  };

  std::string out = "virtual service " + (status.contains("name") ? cell_text(take("name")) : name);
  out += "\n";
  std::string facts;
  for (const char* key : {"listen", "protocol", "pool", "se_group", "version"}) {
    if (!status.contains(key)) continue;
    facts += std::string("  ") + key + " " + cell_text(take(key));
  }
  if (!facts.empty()) out += facts + "\n";

  const Json health = take("health");
  if (health.is_object()) {
    out += "health: " + cell_text(health.value("score", Json())) + " (" +
           cell_text(health.value("band", Json())) + ")";
    if (health.value("previous_score", Json()).is_number()) {
      out += ", previously " + cell_text(health["previous_score"]);
    }
    out += "\n";
    for (const Json& reason : health.value("reasons", Json::array())) {
      out += "  - " + cell_text(reason) + "\n";
    }
  } else {
    out += "health: not scored yet\n";
  }

  std::string placed;
  for (const Json& se : take("placement")) placed += (placed.empty() ? "" : ", ") + cell_text(se);
  out += "placement: " + (placed.empty() ? std::string("not placed") : placed) + "\n";

  const Json ses = take("ses");
  if (ses.is_array() && !ses.empty()) {
    std::vector<Column> columns = {field("NAME", "name"), field("STATE", "state"),
                                   field("CONFIG", "config_version"),
                                   field("ACKED", "acked_version"), field("IN_SYNC", "in_sync")};
    // Apply errors are rare: a column only when an SE has one.
    for (const Json& se : ses) {
      if (se.is_object() && se.value("apply_error", Json()).is_string()) {
        columns.push_back(field("APPLY_ERROR", "apply_error"));
        break;
      }
    }
    out += "\nservice engines:\n" + indent(render_table(columns, ses));
  }

  const Json servers = take("servers");
  if (servers.is_array()) {
    out += "\nservers:\n" + (servers.empty() ? "  (none)\n" : indent(servers_table(servers)));
  }

  // Whatever else the controller adds is shown rather than dropped.
  Json rest = Json::object();
  for (const auto& [key, value] : status.items()) {
    if (!shown.count(key)) rest[key] = value;
  }
  if (!rest.empty()) out += "\n" + render_yaml(rest);
  return out;
}

}  // namespace ballast::cli
