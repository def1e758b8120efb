#include "controller/documents.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <set>

#include "config/config.h"

namespace ballast::controller {

const std::vector<std::string> kKinds = {"virtual_services", "pools", "health_monitors",
                                         "se_groups"};

bool isKind(const std::string& kind) {
  return std::find(kKinds.begin(), kKinds.end(), kind) != kKinds.end();
}

namespace {

std::string dumpJson(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

bool isInteger(const std::string& s) {
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  if (i >= s.size() || s.size() - i > 18) return false;
  return std::all_of(s.begin() + static_cast<long>(i), s.end(),
                     [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
}

bool isDecimal(const std::string& s) {
  // digits '.' digits, optional sign: what YAML 1.2 core calls a float in plain style.
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  size_t dot = s.find('.', i);
  if (dot == std::string::npos || dot == i || dot + 1 == s.size()) return false;
  auto digits = [&](size_t from, size_t to) {
    return std::all_of(s.begin() + static_cast<long>(from), s.begin() + static_cast<long>(to),
                       [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
  };
  return digits(i, dot) && digits(dot + 1, s.size());
}

Json scalarToJson(const YAML::Node& node) {
  const std::string& s = node.Scalar();
  if (node.Tag() != "?") return s;  // quoted (tag "!") or explicitly tagged: a string
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  if (isInteger(s)) return std::stoll(s);
  if (isDecimal(s)) return std::stod(s);
  return s;
}

Json nodeToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return scalarToJson(node);
    case YAML::NodeType::Sequence: {
      Json out = Json::array();
      for (const YAML::Node& item : node) out.push_back(nodeToJson(item));
      return out;
    }
    case YAML::NodeType::Map: {
      Json out = Json::object();
      for (const auto& pair : node) {
        const YAML::Node key = pair.first;
        std::string name = key.IsScalar() ? key.Scalar() : dumpJson(nodeToJson(key));
        if (!out.contains(name)) out[name] = nodeToJson(pair.second);  // the first one counts
      }
      return out;
    }
    default:
      return nullptr;
  }
}

// "pools[3].servers[1].address" -> kind "pools", index 3, rest "servers[1].address".
struct ErrorPlace {
  std::string kind;
  size_t index = 0;
  std::string rest;
  bool inObject = false;
};

ErrorPlace locate(const std::string& key_path) {
  ErrorPlace place;
  size_t open = key_path.find('[');
  if (open == std::string::npos) return place;
  size_t close = key_path.find(']', open);
  std::string kind = key_path.substr(0, open);
  std::string index = key_path.substr(open + 1, close == std::string::npos ? 0 : close - open - 1);
  if (!isKind(kind) || close == std::string::npos || !isInteger(index) || index[0] == '-') {
    return place;
  }
  place.kind = kind;
  place.index = std::stoul(index);
  place.rest = close + 1 < key_path.size() && key_path[close + 1] == '.'
                   ? key_path.substr(close + 2)
                   : key_path.substr(close + 1);
  place.inObject = true;
  return place;
}

std::string nameOf(const Json& object) {
  auto it = object.find("name");
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string describe(const config::ConfigError& e) {
  std::string text;
  if (e.line > 0) text = "line " + std::to_string(e.line) + ": ";
  if (!e.key_path.empty()) text += e.key_path + ": ";
  return text + e.message;
}

}  // namespace

std::optional<Json> parseBody(const std::string& text, std::string* error) {
  Json parsed = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_discarded()) return parsed;
  try {
    return yamlToJson(text);
  } catch (const YAML::Exception& e) {
    *error = "body is neither JSON nor YAML: " + e.msg +
             (e.mark.is_null() ? "" : " (line " + std::to_string(e.mark.line + 1) + ")");
    return std::nullopt;
  }
}

Json yamlToJson(const std::string& yaml_text) { return nodeToJson(YAML::Load(yaml_text)); }

std::optional<Json> validateChange(const Document& current, const std::string& kind,
                                   const Json& object) {
  const std::string name = nameOf(object);
  const std::string target = kind + "/" + name;
  // The changed object goes last in its list, so that a clash (a listen address already used)
  // is reported on it rather than on the object that was there first.
  Json document = Json::object();
  std::map<std::string, std::vector<std::string>> names;  // kind -> name at each index
  for (const std::string& k : kKinds) {
    Json list = Json::array();
    auto it = current.find(k);
    if (it != current.end()) {
      for (const Json& other : it->second) {
        if (k == kind && nameOf(other) == name) continue;
        list.push_back(other);
        names[k].push_back(nameOf(other));
      }
    }
    if (k == kind) {
      list.push_back(object);
      names[k].push_back(name);
    }
    document[k] = std::move(list);
  }
  config::LoadResult result = config::loadString(dumpJson(document), "api");
  if (result.ok()) return std::nullopt;

  Json errors = Json::array();
  for (const config::ConfigError& e : result.errors) {
    ErrorPlace place = locate(e.key_path);
    Json item = Json::object();
    if (place.inObject && place.index < names[place.kind].size()) {
      std::string owner = place.kind + "/" + names[place.kind][place.index];
      if (owner != target) item["object"] = owner;
      item["path"] = place.rest;
    } else {
      item["path"] = e.key_path;
    }
    item["message"] = e.message;
    errors.push_back(std::move(item));
  }
  return Json{{"error", "invalid " + target}, {"errors", std::move(errors)}};
}

std::vector<std::string> usersOf(const Document& current, const std::string& kind,
                                 const std::string& name) {
  std::vector<std::string> users;
  auto list = [&](const std::string& k) -> const std::vector<Json>& {
    static const std::vector<Json> kEmpty;
    auto it = current.find(k);
    return it == current.end() ? kEmpty : it->second;
  };
  if (kind == "pools" || kind == "se_groups") {
    for (const Json& vs : list("virtual_services")) {
      std::string field = kind == "pools" ? "pool" : "se_group";
      std::string used = vs.value(field, kind == "se_groups" ? std::string("default") : "");
      if (vs.contains(field) && !vs[field].is_string()) used.clear();
      if (used == name) users.push_back("virtual_services/" + nameOf(vs));
    }
  } else if (kind == "health_monitors") {
    for (const Json& pool : list("pools")) {
      auto it = pool.find("health_monitors");
      if (it == pool.end() || !it->is_array()) continue;
      if (std::find(it->begin(), it->end(), Json(name)) != it->end()) {
        users.push_back("pools/" + nameOf(pool));
      }
    }
  }
  return users;
}

ApplyDocument parseApplyDocument(const std::string& text) {
  ApplyDocument out;
  auto fail = [&](int status, Json body) {
    out.status = status;
    out.error = std::move(body);
    return out;
  };
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
    return fail(400, {{"error", "empty document (send {} to delete everything)"}});
  }
  config::LoadResult result = config::loadString(text, "apply");
  std::vector<config::ConfigError> errors;
  for (const config::ConfigError& e : result.errors) {
    // An object's "version" (as GET returns it) is allowed: exported objects apply as they are.
    ErrorPlace place = locate(e.key_path);
    bool version_key = place.inObject && place.rest == "version" &&
                       e.message.rfind("unknown key", 0) == 0;
    if (!version_key) errors.push_back(e);
  }
  for (const config::ConfigError& e : errors) {
    if (e.message.rfind("YAML syntax error", 0) == 0) return fail(400, {{"error", describe(e)}});
  }
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return fail(400, {{"error", "YAML syntax error: " + e.msg}});
  }
  // The engine's own sections: each SE has them in its own file, the controller never sends them.
  if (root.IsMap()) {
    for (const auto& pair : root) {
      const YAML::Node key = pair.first;
      if (key.IsScalar() && (key.Scalar() == "se" || key.Scalar() == "store")) {
        int line = key.Mark().is_null() ? 0 : key.Mark().line + 1;
        errors.push_back({"apply", line, key.Scalar(),
                          "not accepted by the controller (it belongs to each service engine's "
                          "own file)"});
      }
    }
  }
  if (!errors.empty()) {
    std::stable_sort(errors.begin(), errors.end(),
                     [](const auto& a, const auto& b) { return a.line < b.line; });
    Json items = Json::array();
    for (const config::ConfigError& e : errors) {
      items.push_back(
          {{"line", e.line}, {"path", e.key_path}, {"message", e.message}, {"text", describe(e)}});
    }
    std::string first = describe(errors.front());
    std::string more =
        errors.size() > 1 ? " (and " + std::to_string(errors.size() - 1) + " more)" : std::string();
    return fail(422, {{"error", "invalid document: " + first + more}, {"errors", items}});
  }
  Json json = nodeToJson(root);
  for (const std::string& kind : kKinds) {
    std::vector<Json>& list = out.desired[kind];
    if (json.contains(kind) && json[kind].is_array()) {
      for (Json item : json[kind]) {
        if (item.is_object()) item.erase("version");
        list.push_back(std::move(item));
      }
    }
  }
  return out;
}

std::vector<Change> diff(const Document& current, const Document& desired) {
  std::vector<Change> changes;
  for (const std::string& kind : kKinds) {
    std::map<std::string, const Json*> now, want;
    if (auto it = current.find(kind); it != current.end()) {
      for (const Json& o : it->second) now[nameOf(o)] = &o;
    }
    if (auto it = desired.find(kind); it != desired.end()) {
      for (const Json& o : it->second) want[nameOf(o)] = &o;
    }
    std::set<std::string> all;
    for (const auto& [name, _] : now) all.insert(name);
    for (const auto& [name, _] : want) all.insert(name);
    for (const std::string& name : all) {
      auto n = now.find(name);
      auto w = want.find(name);
      if (n == now.end()) {
        changes.push_back({"create", kind, name, *w->second});
      } else if (w == want.end()) {
        if (kind == "se_groups" && name == "default") continue;
        changes.push_back({"delete", kind, name, nullptr});
      } else if (*n->second != *w->second) {
        changes.push_back({"update", kind, name, *w->second});
      }
    }
  }
  return changes;
}

Json renderSeConfig(const Document& current, const std::vector<std::string>& virtual_services) {
  auto byName = [&](const std::string& kind) {
    std::map<std::string, Json> out;
    if (auto it = current.find(kind); it != current.end()) {
      for (const Json& o : it->second) out[nameOf(o)] = o;
    }
    return out;
  };
  std::map<std::string, Json> vss = byName("virtual_services");
  std::map<std::string, Json> pools = byName("pools");
  std::map<std::string, Json> monitors = byName("health_monitors");
  std::set<std::string> vs_names(virtual_services.begin(), virtual_services.end());
  std::set<std::string> pool_names, monitor_names;
  Json out = {{"virtual_services", Json::array()},
              {"pools", Json::array()},
              {"health_monitors", Json::array()}};
  for (const std::string& name : vs_names) {
    auto it = vss.find(name);
    if (it == vss.end()) continue;
    Json vs = it->second;
    vs.erase("se_group");
    vs.erase("version");
    if (vs.contains("pool") && vs["pool"].is_string()) pool_names.insert(vs["pool"]);
    out["virtual_services"].push_back(std::move(vs));
  }
  for (const std::string& name : pool_names) {
    auto it = pools.find(name);
    if (it == pools.end()) continue;
    Json pool = it->second;
    pool.erase("version");
    if (pool.contains("health_monitors") && pool["health_monitors"].is_array()) {
      for (const Json& m : pool["health_monitors"]) {
        if (m.is_string()) monitor_names.insert(m.get<std::string>());
      }
    }
    out["pools"].push_back(std::move(pool));
  }
  for (const std::string& name : monitor_names) {
    auto it = monitors.find(name);
    if (it == monitors.end()) continue;
    Json monitor = it->second;
    monitor.erase("version");
    out["health_monitors"].push_back(std::move(monitor));
  }
  return out;
}

}  // namespace ballast::controller
