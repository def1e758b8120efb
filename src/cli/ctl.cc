#include "cli/ctl.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <set>
#include <sstream>

#include "cli/api_client.h"
#include "cli/render.h"
#include "cli/status.h"

namespace ballast::cli {

namespace {

// What `get` and `delete` accept: the short name, its aliases, and where it lives in the API.
struct Kind {
  std::string name;
  std::vector<std::string> aliases;
  std::string api;  // the path below /api/v1
  bool object;      // a configuration object: get NAME reads /api/v1/{api}/NAME, delete works
  std::vector<Column> columns;
};

Column se_group_column() {
  return {"SE_GROUP", [](const Json& item) {
            return item.contains("se_group") ? cell_text(item["se_group"]) : std::string("default");
          }};
}

Column servers_column() {
  return {"SERVERS", [](const Json& item) {
            if (!item.contains("servers") || !item["servers"].is_array()) return std::string("-");
            const Json& servers = item["servers"];
            std::string text;
            size_t shown = 0;
            for (const Json& server : servers) {
              if (shown == 3) break;
              if (!text.empty()) text += ",";
              text += server.is_object() && server.contains("address")
                          ? cell_text(server["address"])
                          : cell_text(server);
              ++shown;
            }
            if (servers.size() > shown)
              text += " (+" + std::to_string(servers.size() - shown) + ")";
            return text.empty() ? std::string("-") : text;
          }};
}

Column age_column(const std::string& header, const std::string& key) {
  return {header, [key](const Json& item) {
            if (!item.contains(key) || !item[key].is_number())
              return cell_text(item.value(key, Json()));
            char text[32];
            std::snprintf(text, sizeof text, "%.1fs", item[key].get<double>());
            return std::string(text);
          }};
}

// A number of an object inside the item: item[outer][key].
Column nested_column(const std::string& header, const std::string& outer, const std::string& key) {
  return {header, [outer, key](const Json& item) {
            if (!item.contains(outer) || !item[outer].is_object() || !item[outer].contains(key)) {
              return std::string("-");
            }
            return cell_text(item[outer][key]);
          }};
}

// A health score's reasons, joined.
Column reasons_column() {
  return {"REASONS", [](const Json& item) {
            std::string text;
            if (item.contains("reasons") && item["reasons"].is_array()) {
              for (const Json& r : item["reasons"]) text += (text.empty() ? "" : "; ") + cell_text(r);
            }
            return text.empty() ? std::string("-") : text;
          }};
}

// Tables show a key the API leaves out as its documented default (docs/configuration.md).
const std::vector<Kind>& kinds() {
  static const std::vector<Kind> list = {
      {"vs",
       {"virtual_services", "virtual_service", "virtualservices"},
       "virtual_services",
       true,
       {field("NAME", "name"), field("LISTEN", "listen"), field("PROTOCOL", "protocol"),
        field("POOL", "pool"), se_group_column(), field("VERSION", "version")}},
      {"pools",
       {"pool"},
       "pools",
       true,
       {field("NAME", "name"), field("LB_ALGORITHM", "lb_algorithm", "round_robin"),
        servers_column(), field("MONITORS", "health_monitors"), field("VERSION", "version")}},
      {"monitors",
       {"monitor", "health_monitors", "health_monitor"},
       "health_monitors",
       true,
       {field("NAME", "name"), field("TYPE", "type"), field("INTERVAL", "interval"),
        field("TIMEOUT", "timeout"), field("REQUEST", "request"), field("VERSION", "version")}},
      {"se_groups",
       {"se_group", "groups", "group"},
       "se_groups",
       true,
       {field("NAME", "name"), field("MAX_VS_PER_SE", "max_vs_per_se", "10"),
        field("MIN_SE_PER_VS", "min_se_per_vs", "1"), field("HA_MODE", "ha_mode", "n_plus_m"),
        field("SPARES", "spares", "0"), field("VERSION", "version")}},
      {"ses",
       {"se", "service_engines"},
       "ses",
       false,
       {field("NAME", "name"), field("ADDRESS", "address"), se_group_column(),
        field("STATE", "state"), age_column("LAST_SEEN", "last_seen_age_s"),
        field("CONFIG", "config_version"), field("ACKED", "acked_version"),
        field("VIRTUAL_SERVICES", "virtual_services")}},
      {"events",
       {"event"},
       "events",
       false,
       {field("ID", "id"), field("TIME", "time"), field("TYPE", "type"), field("OBJECT", "object"),
        field("MESSAGE", "message")}},
      {"health",
       {"scores", "score"},
       "health",
       false,
       {field("KIND", "kind"), field("NAME", "name"), field("SCORE", "score"),
        field("BAND", "band"), field("PREVIOUS", "previous_score"), reasons_column()}},
      {"webhooks",
       {"webhook"},
       "webhooks",
       false,
       {field("NAME", "name"), field("URL", "url"), field("EVENTS", "events", "all"),
        field("ENABLED", "enabled", "true"), nested_column("DELIVERED", "delivery", "delivered"),
        nested_column("FAILED", "delivery", "failed"),
        nested_column("PENDING", "delivery", "pending"), field("VERSION", "version")}},
      {"placements",
       {"placement"},
       "placements",
       false,
       {field("VIRTUAL_SERVICE", "virtual_service"), field("SES", "ses")}},
  };
  return list;
}

std::string kind_names() {
  std::string names;
  for (const Kind& kind : kinds()) names += (names.empty() ? "" : ", ") + kind.name;
  return names;
}

// What `delete` takes: configuration objects, and service engines (a lost one is forgotten).
bool deletable(const Kind& kind) { return kind.object || kind.api == "ses"; }

const Kind& find_kind(const std::string& name, bool deletable_only) {
  for (const Kind& kind : kinds()) {
    if (deletable_only && !deletable(kind)) continue;
    if (kind.name == name ||
        std::find(kind.aliases.begin(), kind.aliases.end(), name) != kind.aliases.end()) {
      return kind;
    }
  }
  // `delete` names singular kinds (vs, pool, monitor, se_group, se); say so in those words.
  const std::string listed = deletable_only ? "vs, pool, monitor, se_group, se" : kind_names();
  throw CtlError("unknown kind '" + name + "' (kinds: " + listed + ")", CtlError::kUsage);
}

std::string read_file(const std::string& path, const std::string& what) {
  std::string text;
  if (path == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    return text;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw CtlError("cannot read " + what + " " + path + ": " + std::strerror(errno),
                   CtlError::kFailed);
  }
  text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return text;
}

// The token file holds the token and perhaps a trailing newline; the token is never printed.
std::string read_token(const std::string& path) {
  if (path.empty()) return "";
  std::string token = read_file(path, "token file");
  const size_t end = token.find_last_not_of(" \t\r\n");
  token = end == std::string::npos ? "" : token.substr(0, end + 1);
  const size_t start = token.find_first_not_of(" \t\r\n");
  token = start == std::string::npos ? "" : token.substr(start);
  if (token.empty()) throw CtlError("token file " + path + " is empty", CtlError::kFailed);
  if (token.find_first_of(" \t\r\n") != std::string::npos) {
    throw CtlError("token file " + path + " holds more than one line or word", CtlError::kFailed);
  }
  return token;
}

std::string render(const Json& value, const std::string& format) {
  return format == "yaml" ? render_yaml(value) : render_json(value);
}

struct Options {
  ApiOptions api;
  std::string token_file;
  std::string output = "table";
  // get
  std::string kind;
  std::string name;
  std::string event_type, event_object;
  int64_t since_id = -1, limit = -1;
  // apply
  std::string file;
  bool dry_run = false;
  // delete
  std::string if_match;
};

int get(ApiClient& api, const Options& options) {
  const Kind& kind = find_kind(options.kind, false);
  Json answer;
  bool single = false;
  if (kind.api == "events") {
    std::string query;
    auto add = [&query](const std::string& key, const std::string& value) {
      query += (query.empty() ? "?" : "&") + key + "=" + url_encode(value);
    };
    if (!options.event_type.empty()) add("type", options.event_type);
    const std::string object = !options.event_object.empty() ? options.event_object : options.name;
    if (!object.empty()) add("object", object);
    if (options.since_id >= 0) add("since_id", std::to_string(options.since_id));
    if (options.limit >= 0) add("limit", std::to_string(options.limit));
    answer = api.get("/events" + query);
  } else if (kind.api == "health") {
    // NAME: a kind (vs, pool, server, se) lists its scores; KIND/NAME is one score (a server's
    // name holds a slash itself: pool/address).
    std::string path = "/health";
    size_t start = 0;
    while (start < options.name.size()) {
      size_t slash = options.name.find('/', start);
      if (slash == std::string::npos) slash = options.name.size();
      path += "/" + url_encode(options.name.substr(start, slash - start));
      start = slash + 1;
    }
    answer = api.get(path);
    single = options.name.find('/') != std::string::npos;
  } else if (!options.name.empty() && kind.api == "placements") {
    // The API lists placements only; pick the one asked for.
    Json list = api.get("/placements");
    for (const Json& item : list.value("items", Json::array())) {
      if (item.value("virtual_service", "") == options.name) answer = item;
    }
    if (answer.is_null()) {
      throw CtlError("virtual service " + options.name + " is not placed (or does not exist)",
                     CtlError::kFailed);
    }
    single = true;
  } else if (!options.name.empty()) {
    answer = api.get("/" + kind.api + "/" + url_encode(options.name));
    single = true;
  } else {
    answer = api.get("/" + kind.api);
  }
  if (options.output != "table") {
    std::cout << render(answer, options.output);
    return 0;
  }
  Json items = single ? Json::array({answer}) : answer.value("items", Json::array());
  std::cout << render_table(kind.columns, items);
  return 0;
}

int apply(ApiClient& api, const Options& options) {
  const std::string body = read_file(options.file, "file");
  const bool is_json =
      options.file.size() > 5 && options.file.substr(options.file.size() - 5) == ".json";
  const std::string path = options.dry_run ? "/apply?dry_run=true" : "/apply";
  Json answer = api.post(path, body, is_json ? "application/json" : "application/yaml");
  if (options.output != "table") {
    std::cout << render(answer, options.output);
    return 0;
  }
  const Json changes = answer.value("changes", Json::array());
  for (const Json& change : changes) {
    std::string op = change.value("op", "?");
    op.resize(std::max<size_t>(op.size() + 2, 8), ' ');  // "create  ", "update  ", "delete  "
    std::cout << op << change.value("kind", "?") << "/" << change.value("name", "?") << "\n";
  }
  const std::string count =
      std::to_string(changes.size()) + (changes.size() == 1 ? " change" : " changes");
  if (options.dry_run) {
    std::cout << "dry run: " << (changes.empty() ? "no changes" : count + ", nothing applied")
              << "\n";
  } else if (changes.empty()) {
    std::cout << "no changes (revision " << cell_text(answer.value("revision", Json())) << ")\n";
  } else {
    std::cout << "applied " << count << ": revision " << cell_text(answer.value("revision", Json()))
              << "\n";
  }
  return 0;
}

int remove(ApiClient& api, const Options& options) {
  const Kind& kind = find_kind(options.kind, true);
  api.remove("/" + kind.api + "/" + url_encode(options.name), options.if_match);
  std::cout << "deleted " << kind.api << "/" << options.name << "\n";
  return 0;
}

int status(ApiClient& api, const Options& options) {
  Json answer = api.get("/virtual_services/" + url_encode(options.name) + "/status");
  std::cout << (options.output == "table" ? render_vs_status(options.name, answer)
                                          : render(answer, options.output));
  return 0;
}

void add_output_option(CLI::App* command, Options& options) {
  command->add_option("-o,--output", options.output, "Output format: table (default), json or yaml")
      ->check(CLI::IsMember({"table", "json", "yaml"}));
}

// The first word that is not an option: the command, named in the error when CLI11 would only
// say that one is required. Empty if there is none.
std::string command_word(const std::vector<std::string>& args) {
  static const std::set<std::string> kTakesValue = {"--controller", "--token-file", "--ca-file"};
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--") return i + 1 < args.size() ? args[i + 1] : "";
    if (args[i].starts_with("-")) {
      if (kTakesValue.count(args[i])) ++i;
      continue;
    }
    return args[i];
  }
  return "";
}

// Prints each line of the error after the program name.
int fail(const std::string& message, int code) {
  std::istringstream lines(message);
  std::string line;
  while (std::getline(lines, line)) std::fprintf(stderr, "ballast ctl: %s\n", line.c_str());
  return code;
}

}  // namespace

int main(const std::vector<std::string>& args) {
  Options options;
  CLI::App app{"ballast ctl: the command-line client of the controller's REST API (docs/api.md)",
               "ballast ctl"};
  app.fallthrough();
  app.require_subcommand(1);
  app.add_option("--controller", options.api.url,
                 "Controller URL, http(s)://host:port (default: $BALLAST_CONTROLLER)")
      ->envname("BALLAST_CONTROLLER");
  app.add_option("--token-file", options.token_file,
                 "File holding the API token (default: $BALLAST_TOKEN_FILE)")
      ->envname("BALLAST_TOKEN_FILE");
  app.add_option("--ca-file", options.api.ca_file, "https: trust this CA certificate (PEM)");
  app.add_flag("--insecure", options.api.insecure,
               "https: do not verify the controller's certificate");

  CLI::App* get_cmd = app.add_subcommand("get", "List objects of a kind, or show one");
  get_cmd
      ->add_option("kind", options.kind,
                   "vs, pools, monitors, se_groups, ses, events, placements, health, webhooks")
      ->required();
  get_cmd->add_option("name", options.name,
                      "One object (events: the object to filter on; health: a kind, or "
                      "KIND/NAME as vs/web or server/pool/127.0.0.1:9001)");
  add_output_option(get_cmd, options);
  get_cmd->add_option("--type", options.event_type, "events: only this type (e.g. se_lost)");
  get_cmd->add_option("--object", options.event_object, "events: only about this object");
  get_cmd->add_option("--since-id", options.since_id, "events: only those after this id");
  get_cmd->add_option("--limit", options.limit, "events: at most this many (the newest)");

  CLI::App* apply_cmd = app.add_subcommand(
      "apply", "Make a YAML (or JSON) file the desired configuration; prints the changes");
  apply_cmd->add_option("-f,--filename", options.file, "The file (- for standard input)")
      ->required();
  apply_cmd->add_flag("--dry-run", options.dry_run, "Only show what would change");
  add_output_option(apply_cmd, options);

  CLI::App* delete_cmd = app.add_subcommand("delete", "Delete one object");
  delete_cmd->add_option("kind", options.kind, "vs, pool, monitor, se_group, or se (a lost one)")
      ->required();
  delete_cmd->add_option("name", options.name, "Its name")->required();
  delete_cmd->add_option("--if-version", options.if_match,
                         "Only if the object is at this version (If-Match)");

  CLI::App* status_cmd = app.add_subcommand(
      "status", "A virtual service's placement, its SEs and its servers' health");
  status_cmd->add_option("kind", options.kind, "vs")->required();
  status_cmd->add_option("name", options.name, "The virtual service")->required();
  add_output_option(status_cmd, options);

  static const std::set<std::string> kCommands = {"get", "apply", "delete", "status"};
  if (const std::string word = command_word(args); !word.empty() && !kCommands.count(word)) {
    return fail("unknown command '" + word +
                    "' (commands: get, apply, delete, status; see ballast ctl --help)",
                CtlError::kUsage);
  }
  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them backwards
    app.parse(reversed);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return fail(std::string(e.what()) + " (see ballast ctl --help)", CtlError::kUsage);
  }

  try {
    if (options.api.url.empty()) {
      throw CtlError("no controller: use --controller URL or set BALLAST_CONTROLLER",
                     CtlError::kUsage);
    }
    // Usage mistakes first, so they are reported as such even without a reachable controller.
    if (get_cmd->parsed() && find_kind(options.kind, false).api != "events" &&
        (!options.event_type.empty() || !options.event_object.empty() || options.since_id >= 0 ||
         options.limit >= 0)) {
      throw CtlError("--type, --object, --since-id and --limit are for get events",
                     CtlError::kUsage);
    }
    if (delete_cmd->parsed() && !find_kind(options.kind, true).object &&
        !options.if_match.empty()) {
      throw CtlError("--if-version is for configuration objects (a service engine has no version)",
                     CtlError::kUsage);
    }
    if (status_cmd->parsed() && find_kind(options.kind, true).api != "virtual_services") {
      throw CtlError("status takes vs NAME (no status for " + options.kind + ")", CtlError::kUsage);
    }
    options.api.token = read_token(options.token_file);
    ApiClient api(options.api);
    if (get_cmd->parsed()) return get(api, options);
    if (apply_cmd->parsed()) return apply(api, options);
    if (delete_cmd->parsed()) return remove(api, options);
    return status(api, options);
  } catch (const CtlError& e) {
    return fail(e.what(), e.exit_code());
  } catch (const std::exception& e) {
    // e.g. an answer of an unexpected shape; still one line, still not a crash.
    return fail(std::string("unexpected answer: ") + e.what(), CtlError::kFailed);
  }
}

}  // namespace ballast::cli
