#include "controller/service.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <spdlog/spdlog.h>
#include <strings.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "config/values.h"
#include "controller/placement.h"
#include "controller/ui_assets.h"
#include "controller/wall_clock.h"

namespace ballast::controller {
namespace {

constexpr auto kMaxWait = std::chrono::seconds(60);

Response error(int status, const std::string& message) {
  return Response{status, Json{{"error", message}}, {}};
}

Response json(int status, Json body) { return Response{status, std::move(body), {}}; }

// Compares in time independent of where the strings differ and of their lengths: digests of
// equal length are compared in constant time.
bool sameSecret(const std::string& given, const std::string& expected) {
  if (expected.empty()) return false;
  unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(given.data()), given.size(), a);
  SHA256(reinterpret_cast<const unsigned char*>(expected.data()), expected.size(), b);
  return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

std::vector<std::string> splitPath(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    if (slash > start) parts.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return parts;
}

std::string param(const Request& request, const std::string& key) {
  auto it = request.params.find(key);
  return it == request.params.end() ? std::string() : it->second;
}

std::string header(const Request& request, const std::string& name) {
  auto it = request.headers.find(name);
  return it == request.headers.end() ? std::string() : it->second;
}

bool parseInt(const std::string& text, int64_t* out) {
  if (text.empty() || text.size() > 18) return false;
  size_t i = text[0] == '-' ? 1 : 0;
  if (i == text.size()) return false;
  for (size_t j = i; j < text.size(); ++j) {
    if (!std::isdigit(static_cast<unsigned char>(text[j]))) return false;
  }
  *out = std::stoll(text);
  return true;
}

// If-Match: "7", 7, W/"7"; nullopt when absent. *bad when not a version.
std::optional<int64_t> ifMatch(const Request& request, bool* bad) {
  std::string value = header(request, "if-match");
  *bad = false;
  if (value.empty()) return std::nullopt;
  if (value.rfind("W/", 0) == 0) value = value.substr(2);
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
    value = value.substr(1, value.size() - 2);
  }
  int64_t version = 0;
  if (!parseInt(value, &version) || version < 0) {
    *bad = true;
    return std::nullopt;
  }
  return version;
}

Json withVersion(const StoredObject& object) {
  Json out = object.body;
  out["version"] = object.version;
  return out;
}

std::string joinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

uint64_t reportedConnections(const Json& report) {
  uint64_t total = 0;
  if (!report.is_object()) return 0;
  const Json* status = report.contains("status") ? &report["status"] : nullptr;
  if (status == nullptr || !status->is_object() || !status->contains("virtual_services")) return 0;
  for (const Json& vs : (*status)["virtual_services"]) {
    if (!vs.is_object()) continue;
    auto c = vs.find("connections");
    if (c == vs.end() || !c->is_object()) continue;
    auto active = c->find("active");
    if (active != c->end() && active->is_number_unsigned()) total += active->get<uint64_t>();
  }
  return total;
}

uint32_t groupSetting(const Json& group, const char* key, uint32_t fallback) {
  auto it = group.find(key);
  if (it == group.end()) return fallback;
  if (it->is_number_unsigned()) return it->get<uint32_t>();
  if (it->is_string()) {
    uint64_t value = 0;
    if (config::parseUnsigned(it->get<std::string>(), &value)) return static_cast<uint32_t>(value);
  }
  return fallback;
}

std::string vsGroup(const Json& vs) {
  auto it = vs.find("se_group");
  return it != vs.end() && it->is_string() ? it->get<std::string>() : "default";
}


// The rest of a path from `from` on, joined again: server names hold a slash.
std::string joinFrom(const std::vector<std::string>& parts, size_t from) {
  std::string out;
  for (size_t i = from; i < parts.size(); ++i) out += (i == from ? "" : "/") + parts[i];
  return out;
}

}  // namespace

Service::Service(std::unique_ptr<Store> store, ServiceOptions options)
    : store_(std::move(store)), options_(std::move(options)), notifier_(options_.notifier) {
  std::string analytics_error;
  std::unique_ptr<Analytics> analytics =
      Analytics::open({.db_path = options_.analytics_db}, &analytics_error);
  if (!analytics) throw std::runtime_error("analytics: " + analytics_error);
  monitor_ = std::make_unique<HealthMonitor>(std::move(analytics), options_.monitor);
  std::lock_guard lock(mu_);
  loadWebhookTargets();
  if (!store_->get("se_groups", "default")) {
    Store::Transaction t(*store_);
    int64_t revision = store_->bumpRevision();
    store_->put({"se_groups", "default", revision, Json{{"name", "default"}}});
    raise("object_changed", "se_groups/default", "created se_groups/default");
    t.commit();
  }
  // SEs known from before a restart get se_lost_after to report again before they count as lost.
  Clock::time_point now = Clock::now();
  for (const SeRecord& se : store_->ses()) live_[se.name] = Live{now, se.config_revision};
  last_tick_ = now;
  reconcile();
}

void Service::shutdown() {
  std::lock_guard lock(mu_);
  if (!stopping_) monitor_->flush(nowMs(), /*force=*/true);
  stopping_ = true;
  changed_.notify_all();
}

void Service::raise(const std::string& type, const std::string& object,
                    const std::string& message, const Json& details) {
  Event e = store_->addEvent(type, object, message, details);
  notifier_.publish({{"id", e.id},
                     {"time", e.time},
                     {"type", e.type},
                     {"object", e.object},
                     {"message", e.message},
                     {"details", e.details}});
}

void Service::loadWebhookTargets() {
  std::vector<WebhookTarget> targets;
  for (const StoredObject& o : store_->list("webhooks")) {
    if (validateWebhook(o.body).empty()) targets.push_back(webhookFromJson(o.body));
  }
  notifier_.setTargets(std::move(targets));
}

Service::Role Service::tokenRole(const std::string& token) const {
  if (token.empty()) return Role::None;
  // Every comparison is made, so the time does not tell which kind of token matched.
  bool admin = sameSecret(token, options_.admin_token);
  bool readonly = sameSecret(token, options_.readonly_token);
  bool se = sameSecret(token, options_.se_token);
  if (admin) return Role::Admin;
  if (readonly) return Role::ReadOnly;
  if (se) return Role::ServiceEngine;
  return Role::None;
}

Service::Role Service::authenticate(const Request& request, bool* by_session) {
  *by_session = false;
  std::string value = header(request, "authorization");
  if (value.empty()) {
    std::string id = Sessions::idFromCookieHeader(header(request, "cookie"));
    if (id.empty()) return Role::None;
    std::lock_guard lock(sessions_mu_);
    std::optional<std::string> role = sessions_.find(id);
    if (!role) return Role::None;
    *by_session = true;
    return *role == "admin" ? Role::Admin : Role::ReadOnly;
  }
  if (value.size() < 7 || strncasecmp(value.c_str(), "Bearer ", 7) != 0) return Role::None;
  std::string token = value.substr(7);
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.front()))) {
    token.erase(token.begin());
  }
  return tokenRole(token);
}

Response Service::handle(const Request& request) {
  if (request.path == "/ui" || request.path.rfind("/ui/", 0) == 0) return serveUi(request);
  if (request.path == "/api/v1/session") return session(request);
  bool by_session = false;
  Role role = authenticate(request, &by_session);
  if (role == Role::None) {
    Response r = error(401, "unauthorized");
    r.headers["WWW-Authenticate"] = "Bearer";
    return r;
  }
  bool se_api = request.path.rfind("/api/v1/se/", 0) == 0;
  if (se_api && role != Role::ServiceEngine) {
    return error(403, "forbidden: the service engine endpoints take the SE token");
  }
  if (!se_api && role == Role::ServiceEngine) return error(403, "forbidden: service engine token");
  if (role == Role::ReadOnly && request.method != "GET" && request.method != "HEAD") {
    return error(403, "forbidden: read-only token");
  }
  // A cookie is sent by the browser on its own: writes need the token itself (no CSRF).
  if (by_session && request.method != "GET" && request.method != "HEAD") {
    return error(403, "forbidden: a dashboard session only reads; send the token to write");
  }
  try {
    return route(request);
  } catch (const StoreError& e) {
    spdlog::error("controller: database error: {}", e.what());
    return error(500, std::string("database error: ") + e.what());
  } catch (const std::exception& e) {
    spdlog::error("controller: {} {}: {}", request.method, request.path, e.what());
    return error(500, std::string("internal error: ") + e.what());
  }
}

Response Service::session(const Request& request) {
  const std::string& m = request.method;
  bool secure = options_.tls;
  if (m == "POST") {
    Json body = Json::parse(request.body, nullptr, /*allow_exceptions=*/false);
    if (body.is_discarded() || !body.is_object() || !body.contains("token") ||
        !body["token"].is_string()) {
      return error(400, "expected {\"token\": \"...\"}");
    }
    Role role = tokenRole(body["token"].get<std::string>());
    if (role != Role::Admin && role != Role::ReadOnly) return error(401, "unauthorized");
    std::lock_guard lock(sessions_mu_);
    std::string id = sessions_.create(role == Role::Admin ? "admin" : "readonly");
    Response r{204, nullptr, {{"Set-Cookie", sessions_.setCookie(id, secure)}}};
    r.headers["Cache-Control"] = "no-store";
    return r;
  }
  std::string id = Sessions::idFromCookieHeader(header(request, "cookie"));
  if (m == "GET" || m == "HEAD") {
    std::lock_guard lock(sessions_mu_);
    std::optional<std::string> role = id.empty() ? std::nullopt : sessions_.find(id);
    if (!role) return error(401, "unauthorized");
    return json(200, {{"role", *role}});
  }
  if (m == "DELETE") {
    std::lock_guard lock(sessions_mu_);
    if (!id.empty()) sessions_.remove(id);
    return Response{204, nullptr, {{"Set-Cookie", Sessions::clearCookie(secure)}}};
  }
  Response r = error(405, "method " + m + " not allowed (allowed: GET, POST, DELETE)");
  r.headers["Allow"] = "GET, POST, DELETE";
  return r;
}

Response Service::serveUi(const Request& request) {
  if (request.method != "GET" && request.method != "HEAD") {
    Response r = error(405, "method " + request.method + " not allowed (allowed: GET)");
    r.headers["Allow"] = "GET";
    return r;
  }
  if (request.path == "/ui") return Response{301, nullptr, {{"Location", "/ui/"}}};
  std::string path = request.path.substr(4);
  if (path.empty()) path = "index.html";
  // The pages that show data need a session; the login page and scripts and styles do not (they
  // hold no data, and the login page needs them).
  if (path == "index.html") {
    std::string id = Sessions::idFromCookieHeader(header(request, "cookie"));
    std::lock_guard lock(sessions_mu_);
    if (id.empty() || !sessions_.find(id)) {
      return Response{303, nullptr, {{"Location", "/ui/login.html"}, {"Cache-Control", "no-store"}}};
    }
  }
  const UiAsset* asset = findUiAsset(path);
  if (asset == nullptr) return error(404, "not found: " + request.path);
  Response r;
  r.content_type = std::string(asset->content_type);
  r.raw = std::string(asset->body);
  r.headers = {{"Cache-Control", "no-cache"},
               {"X-Content-Type-Options", "nosniff"},
               {"X-Frame-Options", "DENY"},
               {"Referrer-Policy", "no-referrer"},
               {"Content-Security-Policy",
                "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                "frame-ancestors 'none'"}};
  return r;
}

Response Service::route(const Request& request) {
  std::vector<std::string> p = splitPath(request.path);
  if (p.size() < 3 || p[0] != "api" || p[1] != "v1")
    return error(404, "not found: " + request.path);
  p.erase(p.begin(), p.begin() + 2);
  const std::string& m = request.method;
  bool get = m == "GET" || m == "HEAD";

  // The methods a path allows, then the handler: 405 names the allowed ones.
  std::string allow;
  auto notAllowed = [&]() {
    Response r = error(405, "method " + m + " not allowed (allowed: " + allow + ")");
    r.headers["Allow"] = allow;
    return r;
  };

  if (isKind(p[0])) {
    const std::string& kind = p[0];
    if (p.size() == 1) {
      allow = "GET, POST";
      if (get) return listObjects(kind);
      if (m == "POST") return writeObject(request, kind, "", /*create_only=*/true);
      return notAllowed();
    }
    if (p.size() == 2) {
      allow = "GET, PUT, DELETE";
      if (get) return getObject(kind, p[1]);
      if (m == "PUT") return writeObject(request, kind, p[1], /*create_only=*/false);
      if (m == "DELETE") return deleteObject(request, kind, p[1]);
      return notAllowed();
    }
    if (p.size() == 3 && kind == "virtual_services" && p[2] == "status") {
      allow = "GET";
      return get ? vsStatus(p[1]) : notAllowed();
    }
  } else if (p[0] == "health") {
    allow = "GET";
    return get ? health(p) : notAllowed();
  } else if (p[0] == "analytics") {
    allow = "GET";
    return get ? analyticsSeries(request, p) : notAllowed();
  } else if (p[0] == "webhooks" && p.size() <= 2) {
    if (p.size() == 1) {
      allow = "GET, POST";
      if (get) return listWebhooks();
      if (m == "POST") return writeWebhook(request, "", /*create_only=*/true);
      return notAllowed();
    }
    allow = "GET, PUT, DELETE";
    if (get) return getWebhook(p[1]);
    if (m == "PUT") return writeWebhook(request, p[1], /*create_only=*/false);
    if (m == "DELETE") return deleteWebhook(request, p[1]);
    return notAllowed();
  } else if (p[0] == "apply" && p.size() == 1) {
    allow = "POST";
    return m == "POST" ? apply(request) : notAllowed();
  } else if (p[0] == "ses" && p.size() <= 2) {
    allow = p.size() == 2 ? "GET, DELETE" : "GET";
    if (get) return p.size() == 1 ? listSes() : getSe(p[1]);
    if (m == "DELETE" && p.size() == 2) return deleteSe(request, p[1]);
    return notAllowed();
  } else if (p[0] == "placements" && p.size() == 1) {
    allow = "GET";
    return get ? listPlacements() : notAllowed();
  } else if (p[0] == "events" && p.size() == 1) {
    allow = "GET";
    return get ? listEvents(request) : notAllowed();
  } else if (p[0] == "se") {
    if (p.size() == 2 && p[1] == "register") {
      allow = "POST";
      return m == "POST" ? registerSe(request) : notAllowed();
    }
    if (p.size() == 3 && p[2] == "config") {
      allow = "GET";
      return get ? seConfig(request, p[1]) : notAllowed();
    }
    if (p.size() == 3 && p[2] == "report") {
      allow = "POST";
      return m == "POST" ? seReport(request, p[1]) : notAllowed();
    }
  }
  return error(404, "not found: " + request.path);
}

Document Service::currentDocument() {
  Document doc;
  for (const std::string& kind : kKinds) {
    for (StoredObject& o : store_->list(kind)) doc[kind].push_back(std::move(o.body));
  }
  return doc;
}

Response Service::listObjects(const std::string& kind) {
  std::lock_guard lock(mu_);
  Json items = Json::array();
  for (const StoredObject& o : store_->list(kind)) items.push_back(withVersion(o));
  return json(200, {{"items", items}});
}

Response Service::getObject(const std::string& kind, const std::string& name) {
  std::lock_guard lock(mu_);
  std::optional<StoredObject> o = store_->get(kind, name);
  if (!o) return error(404, kind + "/" + name + " not found");
  Response r = json(200, withVersion(*o));
  r.headers["ETag"] = "\"" + std::to_string(o->version) + "\"";
  return r;
}

Response Service::writeObject(const Request& request, const std::string& kind, std::string name,
                              bool create_only) {
  std::string parse_error;
  std::optional<Json> body = parseBody(request.body, &parse_error);
  if (!body) return error(400, parse_error);
  if (!body->is_object()) return error(400, "expected a JSON object");
  body->erase("version");  // what GET returned may be sent back as is
  if (body->contains("name") && !(*body)["name"].is_string()) {
    return json(422, {{"error", "invalid " + kind},
                      {"errors", {{{"path", "name"}, {"message", "expected a string"}}}}});
  }
  std::string body_name = body->value("name", "");
  if (create_only) {
    if (body_name.empty()) {
      return json(422, {{"error", "invalid " + kind},
                        {"errors", {{{"path", "name"}, {"message", "required key is missing"}}}}});
    }
    name = body_name;
  } else if (!body_name.empty() && body_name != name) {
    return error(
        400, "the body's name \"" + body_name + "\" does not match the path's \"" + name + "\"");
  }
  (*body)["name"] = name;
  bool bad_if_match = false;
  std::optional<int64_t> expected = ifMatch(request, &bad_if_match);
  if (bad_if_match) return error(400, "If-Match: expected a version, e.g. \"7\"");

  // Validation may resolve server names (DNS), so it runs without the lock, against a copy of
  // the objects; the write goes ahead only if nothing changed meanwhile (else it is checked again).
  std::unique_lock lock(mu_);
  std::optional<StoredObject> existing;
  for (int attempt = 0;; ++attempt) {
    existing = store_->get(kind, name);
    if (create_only && existing) return error(409, kind + "/" + name + " already exists");
    if (expected) {
      if (!existing) {
        return error(409, "version mismatch: " + kind + "/" + name + " does not exist");
      }
      if (existing->version != *expected) {
        return error(409, "version mismatch: current is " + std::to_string(existing->version));
      }
    }
    int64_t seen = store_->revision();
    Document document = currentDocument();
    if (attempt < 3) lock.unlock();
    std::optional<Json> invalid = validateChange(document, kind, *body);
    if (!lock.owns_lock()) lock.lock();
    if (invalid) return json(422, *invalid);
    if (store_->revision() == seen) break;
  }
  if (existing && existing->body == *body) {
    Response r = json(200, withVersion(*existing));  // unchanged: keeps its version
    r.headers["ETag"] = "\"" + std::to_string(existing->version) + "\"";
    return r;
  }
  StoredObject object{kind, name, 0, *body};
  {
    Store::Transaction t(*store_);
    object.version = store_->bumpRevision();
    store_->put(object);
    std::string what = (existing ? "updated " : "created ") + kind + "/" + name;
    raise("object_changed", kind + "/" + name,
                     what + " (version " + std::to_string(object.version) + ")",
                     {{"op", existing ? "update" : "create"}, {"version", object.version}});
    t.commit();
  }
  spdlog::info("controller: {} {}/{} version {}", existing ? "updated" : "created", kind, name,
               object.version);
  reconcile();
  Response r = json(existing ? 200 : 201, withVersion(object));
  r.headers["ETag"] = "\"" + std::to_string(object.version) + "\"";
  return r;
}

Response Service::deleteObject(const Request& request, const std::string& kind,
                               const std::string& name) {
  bool bad_if_match = false;
  std::optional<int64_t> expected = ifMatch(request, &bad_if_match);
  if (bad_if_match) return error(400, "If-Match: expected a version, e.g. \"7\"");
  std::lock_guard lock(mu_);
  std::optional<StoredObject> existing = store_->get(kind, name);
  if (!existing) return error(404, kind + "/" + name + " not found");
  if (expected && existing->version != *expected) {
    return error(409, "version mismatch: current is " + std::to_string(existing->version));
  }
  if (kind == "se_groups" && name == "default") {
    return error(409, "se_groups/default cannot be deleted (it always exists)");
  }
  std::vector<std::string> users = usersOf(currentDocument(), kind, name);
  if (!users.empty()) {
    return error(409, kind + "/" + name + " is used by " + joinNames(users));
  }
  {
    Store::Transaction t(*store_);
    int64_t revision = store_->bumpRevision();
    store_->remove(kind, name);
    raise("object_changed", kind + "/" + name, "deleted " + kind + "/" + name,
                     {{"op", "delete"}, {"version", revision}});
    t.commit();
  }
  spdlog::info("controller: deleted {}/{}", kind, name);
  reconcile();
  return Response{204, nullptr, {}};
}

Response Service::apply(const Request& request) {
  std::string dry = param(request, "dry_run");
  bool dry_run = dry == "true" || dry == "1" || dry == "yes";
  if (!dry.empty() && !dry_run && dry != "false" && dry != "0" && dry != "no") {
    return error(400, "dry_run: expected true or false");
  }
  ApplyDocument parsed = parseApplyDocument(request.body);
  if (parsed.status != 0) return json(parsed.status, parsed.error);

  std::lock_guard lock(mu_);
  std::vector<Change> changes = diff(currentDocument(), parsed.desired);
  int64_t revision = store_->revision();
  if (!dry_run && !changes.empty()) {
    Store::Transaction t(*store_);
    revision = store_->bumpRevision();
    for (const Change& c : changes) {
      std::string object = c.kind + "/" + c.name;
      if (c.op == "delete") {
        store_->remove(c.kind, c.name);
      } else {
        store_->put({c.kind, c.name, revision, c.body});
      }
      raise("object_changed", object,
                       c.op + "d " + object + " (apply, version " + std::to_string(revision) + ")",
                       {{"op", c.op}, {"version", revision}});
    }
    t.commit();
    spdlog::info("controller: applied a document: {} changes, revision {}", changes.size(),
                 revision);
  }
  Json items = Json::array();
  for (const Change& c : changes)
    items.push_back({{"op", c.op}, {"kind", c.kind}, {"name", c.name}});
  if (!dry_run && !changes.empty()) reconcile();
  return json(200, {{"dry_run", dry_run}, {"revision", revision}, {"changes", items}});
}

Json Service::seSummary(const SeRecord& se, const Placement& placement, Clock::time_point now) {
  Json vss = Json::array();
  for (const auto& [vs, ses] : placement) {
    if (std::find(ses.begin(), ses.end(), se.name) != ses.end()) vss.push_back(vs);
  }
  double age = 0;
  if (auto it = live_.find(se.name); it != live_.end()) {
    age = std::chrono::duration<double>(now - it->second.last_seen).count();
  }
  Json health = nullptr;
  if (std::optional<Json> score = monitor_->score("se", se.name)) {
    health = {{"score", (*score)["score"]}, {"band", (*score)["band"]}};
  }
  // Load: the latest report's resources.
  Json load = {{"cpu_percent", nullptr}, {"connections_active", nullptr}};
  if (se.last_report.is_object() && se.last_report.contains("resources") &&
      se.last_report["resources"].is_object()) {
    const Json& r = se.last_report["resources"];
    load["cpu_percent"] = r.value("cpu_percent", Json(nullptr));
    load["connections_active"] = r.value("connections_active", Json(nullptr));
  }
  return {{"name", se.name},
          {"address", se.address},
          {"se_group", se.group},
          {"state", se.state},
          {"last_seen_age_s", std::round(age * 1000) / 1000},
          {"config_version", se.config_revision},
          {"acked_version", se.acked_revision},
          {"apply_error", se.apply_error.empty() ? Json(nullptr) : Json(se.apply_error)},
          {"version", se.software_version},
          {"virtual_services", vss},
          {"health", health},
          {"load", load}};
}

Response Service::listSes() {
  std::lock_guard lock(mu_);
  Placement placement = store_->placement();
  Json items = Json::array();
  Clock::time_point now = Clock::now();
  for (const SeRecord& se : store_->ses()) items.push_back(seSummary(se, placement, now));
  return json(200, {{"items", items}});
}

Response Service::getSe(const std::string& name) {
  std::lock_guard lock(mu_);
  std::optional<SeRecord> se = store_->se(name);
  if (!se) return error(404, "ses/" + name + " not found");
  Json out = seSummary(*se, store_->placement(), Clock::now());
  out["last_report"] = se->last_report;
  return json(200, out);
}

// A lost engine stays listed (with its last report) until an operator removes it, say after
// retiring its machine. One that still reports cannot be removed: it would register again at
// once; stop it first, and remove it once it is lost.
Response Service::deleteSe(const Request& request, const std::string& name) {
  if (!header(request, "if-match").empty()) {
    return error(400, "If-Match: service engines have no version (only configuration objects do)");
  }
  std::lock_guard lock(mu_);
  std::optional<SeRecord> se = store_->se(name);
  if (!se) return error(404, "ses/" + name + " not found");
  if (se->state == "connected") {
    return error(409, "ses/" + name +
                          " is connected: stop it first; it can be removed once it is lost (no "
                          "report for --se-lost-after)");
  }
  {
    Store::Transaction t(*store_);
    store_->removeSe(name);
    raise("se_removed", "ses/" + name, name + " removed (it was lost)");
    t.commit();
  }
  live_.erase(name);
  changed_.notify_all();  // a poll still waiting for it answers 404
  monitor_->forgetSe(name);
  spdlog::info("controller: SE {} removed", name);
  return Response{204, nullptr, {}};
}

Response Service::listPlacements() {
  std::lock_guard lock(mu_);
  Placement placement = store_->placement();
  Json items = Json::array();
  for (const StoredObject& vs : store_->list("virtual_services")) {
    auto it = placement.find(vs.name);
    items.push_back({{"virtual_service", vs.name},
                     {"se_group", vsGroup(vs.body)},
                     {"ses", it == placement.end() ? Json::array() : Json(it->second)}});
  }
  return json(200, {{"items", items}});
}

Response Service::vsStatus(const std::string& name) {
  std::lock_guard lock(mu_);
  std::optional<StoredObject> vs = store_->get("virtual_services", name);
  if (!vs) return error(404, "virtual_services/" + name + " not found");
  Placement placement = store_->placement();
  std::vector<std::string> placed;
  if (auto it = placement.find(name); it != placement.end()) placed = it->second;
  std::string pool_name = vs->body.value("pool", "");

  Json ses = Json::array();
  std::map<std::string, Json> health;  // server address -> {se: state}
  for (const std::string& se_name : placed) {
    std::optional<SeRecord> se = store_->se(se_name);
    if (!se) continue;
    ses.push_back(
        {{"name", se->name},
         {"state", se->state},
         {"config_version", se->config_revision},
         {"acked_version", se->acked_revision},
         {"in_sync", se->acked_revision == se->config_revision && se->apply_error.empty()},
         {"apply_error", se->apply_error.empty() ? Json(nullptr) : Json(se->apply_error)}});
    const Json& report = se->last_report;
    if (!report.is_object() || !report.contains("status") || !report["status"].is_object())
      continue;
    const Json& status = report["status"];
    if (!status.contains("pools") || !status["pools"].is_array()) continue;
    for (const Json& pool : status["pools"]) {
      if (!pool.is_object() || pool.value("name", "") != pool_name) continue;
      if (!pool.contains("servers") || !pool["servers"].is_array()) continue;
      for (const Json& server : pool["servers"]) {
        if (!server.is_object()) continue;
        std::string state = "unknown";
        if (server.contains("health") && server["health"].is_object()) {
          state = server["health"].value("state", "unknown");
        }
        health[server.value("address", "")][se->name] = state;
      }
    }
  }
  Json servers = Json::array();
  if (std::optional<StoredObject> pool = store_->get("pools", pool_name)) {
    if (pool->body.contains("servers") && pool->body["servers"].is_array()) {
      for (const Json& server : pool->body["servers"]) {
        std::string address = server.is_object() ? server.value("address", "") : "";
        auto it = health.find(address);
        std::optional<Json> score = monitor_->score("server", pool_name + "/" + address);
        servers.push_back({{"address", address},
                           {"health", it == health.end() ? Json::object() : it->second},
                           {"score", score ? *score : Json(nullptr)}});
      }
    }
  }
  std::optional<Json> vs_score = monitor_->score("vs", name);
  return json(200, {{"name", name},
                    {"health", vs_score ? *vs_score : Json(nullptr)},
                    {"se_group", vsGroup(vs->body)},
                    {"version", vs->version},
                    {"pool", pool_name},
                    {"placement", placed},
                    {"ses", ses},
                    {"servers", servers}});
}

Response Service::health(const std::vector<std::string>& p) {
  std::lock_guard lock(mu_);
  if (p.size() == 1) return json(200, {{"items", monitor_->scores("")}});
  if (!analytics::parseKind(p[1])) {
    return error(404, "unknown kind \"" + p[1] + "\" (kinds: vs, pool, server, se)");
  }
  if (p.size() == 2) return json(200, {{"items", monitor_->scores(p[1])}});
  std::string name = joinFrom(p, 2);
  std::optional<Json> score = monitor_->score(p[1], name);
  if (!score) return error(404, "no health score for " + p[1] + "/" + name);
  return json(200, *score);
}

Response Service::analyticsSeries(const Request& request, const std::vector<std::string>& p) {
  if (p.size() < 3) {
    return error(404, "expected /api/v1/analytics/{kind}/{name} (kinds: vs, pool, server, se)");
  }
  std::vector<std::string> metrics;
  for (auto [it, end] = request.params.equal_range("metric"); it != end; ++it) {
    size_t start = 0;
    const std::string& list = it->second;
    while (start <= list.size()) {
      size_t comma = list.find(',', start);
      if (comma == std::string::npos) comma = list.size();
      if (comma > start) metrics.push_back(list.substr(start, comma - start));
      start = comma + 1;
    }
  }
  int64_t now = nowMs();
  auto time = [&](const char* key, int64_t* out) {
    std::string text = param(request, key);
    int64_t value = 0;
    if (text.empty()) return true;
    if (!parseInt(text, &value)) return false;
    *out = value < 0 ? now + value * 1000 : value * 1000;  // negative: seconds before now
    return true;
  };
  int64_t from = 0, to = 0, step = 0;
  if (!time("from", &from)) return error(400, "from: expected Unix seconds, or negative seconds before now");
  if (!time("to", &to)) return error(400, "to: expected Unix seconds, or negative seconds before now");
  if (std::string text = param(request, "step"); !text.empty() && (!parseInt(text, &step) || step <= 0)) {
    return error(400, "step: expected a number of seconds greater than 0");
  }
  std::lock_guard lock(mu_);
  double apdex_us = 500'000;
  if (p[1] == "vs") {
    if (std::optional<StoredObject> vs = store_->get("virtual_services", joinFrom(p, 2))) {
      apdex_us = apdexThresholdUs(vs->body);
    }
  }
  Analytics::QueryError problem;
  Json answer = monitor_->analytics().query(p[1], joinFrom(p, 2), metrics, from, to, step,
                                            apdex_us, now, &problem);
  if (answer.is_null()) return error(problem.status == 0 ? 400 : problem.status, problem.message);
  return json(200, answer);
}

Response Service::listWebhooks() {
  std::lock_guard lock(mu_);
  Json items = Json::array();
  for (const StoredObject& o : store_->list("webhooks")) {
    Json item = redactWebhook(withVersion(o));
    item["delivery"] = notifier_.status(o.name);
    items.push_back(std::move(item));
  }
  return json(200, {{"items", items}});
}

Response Service::getWebhook(const std::string& name) {
  std::lock_guard lock(mu_);
  std::optional<StoredObject> o = store_->get("webhooks", name);
  if (!o) return error(404, "webhooks/" + name + " not found");
  Json body = redactWebhook(withVersion(*o));
  body["delivery"] = notifier_.status(name);
  Response r = json(200, body);
  r.headers["ETag"] = "\"" + std::to_string(o->version) + "\"";
  return r;
}

Response Service::writeWebhook(const Request& request, std::string name, bool create_only) {
  std::string parse_error;
  std::optional<Json> body = parseBody(request.body, &parse_error);
  if (!body) return error(400, parse_error);
  if (!body->is_object()) return error(400, "expected a JSON object");
  body->erase("version");  // what GET returned may be sent back as is
  body->erase("delivery");
  std::string body_name = (*body).contains("name") && (*body)["name"].is_string()
                              ? (*body)["name"].get<std::string>()
                              : "";
  if (create_only) {
    name = body_name;
  } else if (!body_name.empty() && body_name != name) {
    return error(400, "the body's name \"" + body_name + "\" does not match the path's \"" +
                          name + "\"");
  }
  if (!name.empty()) (*body)["name"] = name;
  bool bad_if_match = false;
  std::optional<int64_t> expected = ifMatch(request, &bad_if_match);
  if (bad_if_match) return error(400, "If-Match: expected a version, e.g. \"7\"");

  std::lock_guard lock(mu_);
  std::optional<StoredObject> existing = name.empty() ? std::nullopt : store_->get("webhooks", name);
  // The secret comes back from GET as "***": sending that back keeps the stored one.
  if (existing && body->value("secret", "") == "***" && existing->body.contains("secret")) {
    (*body)["secret"] = existing->body["secret"];
  }
  std::vector<FieldError> problems = validateWebhook(*body);
  if (!problems.empty()) {
    return json(422, {{"error", "invalid webhooks" + (name.empty() ? "" : "/" + name)},
                      {"errors", problems}});
  }
  if (create_only && existing) return error(409, "webhooks/" + name + " already exists");
  if (expected) {
    if (!existing) return error(409, "version mismatch: webhooks/" + name + " does not exist");
    if (existing->version != *expected) {
      return error(409, "version mismatch: current is " + std::to_string(existing->version));
    }
  }
  if (existing && existing->body == *body) {
    return json(200, redactWebhook(withVersion(*existing)));
  }
  StoredObject object{"webhooks", name, 0, *body};
  {
    Store::Transaction t(*store_);
    object.version = store_->bumpRevision();
    store_->put(object);
    raise("object_changed", "webhooks/" + name,
          (existing ? "updated webhooks/" : "created webhooks/") + name,
          {{"version", object.version}});
    t.commit();
  }
  loadWebhookTargets();
  Response r = json(existing ? 200 : 201, redactWebhook(withVersion(object)));
  r.headers["ETag"] = "\"" + std::to_string(object.version) + "\"";
  return r;
}

Response Service::deleteWebhook(const Request& request, const std::string& name) {
  bool bad_if_match = false;
  std::optional<int64_t> expected = ifMatch(request, &bad_if_match);
  if (bad_if_match) return error(400, "If-Match: expected a version, e.g. \"7\"");
  std::lock_guard lock(mu_);
  std::optional<StoredObject> existing = store_->get("webhooks", name);
  if (!existing) return error(404, "webhooks/" + name + " not found");
  if (expected && existing->version != *expected) {
    return error(409, "version mismatch: current is " + std::to_string(existing->version));
  }
  {
    Store::Transaction t(*store_);
    store_->bumpRevision();
    store_->remove("webhooks", name);
    raise("object_changed", "webhooks/" + name, "deleted webhooks/" + name);
    t.commit();
  }
  loadWebhookTargets();
  return Response{204, nullptr, {}};
}

Response Service::listEvents(const Request& request) {
  EventFilter filter;
  filter.type = param(request, "type");
  filter.object = param(request, "object");
  int64_t value = 0;
  if (std::string s = param(request, "since_id"); !s.empty()) {
    if (!parseInt(s, &value) || value < 0) return error(400, "since_id: expected a number");
    filter.since_id = value;
  }
  if (std::string s = param(request, "limit"); !s.empty()) {
    if (!parseInt(s, &value) || value < 1 || value > 1000) {
      return error(400, "limit: expected a number from 1 to 1000");
    }
    filter.limit = static_cast<int>(value);
  }
  std::lock_guard lock(mu_);
  Json items = Json::array();
  for (const Event& e : store_->events(filter)) {
    items.push_back({{"id", e.id},
                     {"time", e.time},
                     {"type", e.type},
                     {"object", e.object},
                     {"message", e.message},
                     {"details", e.details}});
  }
  return json(200, {{"items", items}});
}

Response Service::registerSe(const Request& request) {
  Json body = Json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object()) return error(400, "expected a JSON object");
  auto text = [&](const char* key, const std::string& fallback) {
    auto it = body.find(key);
    return it != body.end() && it->is_string() ? it->get<std::string>() : fallback;
  };
  std::string name = text("name", "");
  if (!config::isValidName(name)) {
    return error(422, "name: expected a name of 1-64 characters from A-Z a-z 0-9 _ . -");
  }
  std::string group = text("se_group", "default");
  if (!config::isValidName(group)) return error(422, "se_group: expected a name");

  std::lock_guard lock(mu_);
  std::optional<SeRecord> existing = store_->se(name);
  SeRecord se = existing.value_or(SeRecord{});
  se.name = name;
  se.address = text("address", "");
  se.group = group;
  se.software_version = text("version", "");
  std::string before = existing ? existing->state : "";
  se.state = "connected";
  {
    Store::Transaction t(*store_);
    if (!existing) {
      se.config_revision = store_->revision();
      se.config = renderSeConfig({}, {});
      raise("se_joined", "ses/" + name, name + " joined (group " + group + ")",
                       {{"address", se.address}, {"se_group", group}});
    } else if (before == "lost") {
      raise("se_returned", "ses/" + name, name + " is back (registered again)",
                       {{"address", se.address}});
    } else {
      raise("se_joined", "ses/" + name, name + " registered again (restart)",
                       {{"address", se.address}, {"se_group", group}});
    }
    store_->putSe(se);
    t.commit();
  }
  spdlog::info("controller: SE {} registered from {} (group {})", name, se.address, group);
  live_[name] = Live{Clock::now(), se.config_revision};
  reconcile();
  return json(200, {{"name", name},
                    {"heartbeat_interval_ms", options_.heartbeat_interval.count()},
                    {"lost_after_ms", options_.se_lost_after.count()}});
}

Response Service::seConfig(const Request& request, const std::string& name) {
  int64_t known = -1;
  if (std::string s = param(request, "known"); !s.empty() && !parseInt(s, &known)) {
    return error(400, "known: expected a revision number");
  }
  double wait_s = 0;
  if (std::string s = param(request, "wait"); !s.empty()) {
    char* end = nullptr;
    wait_s = std::strtod(s.c_str(), &end);
    if (end == s.c_str() || *end != '\0' || !(wait_s >= 0)) {
      return error(400, "wait: expected seconds");
    }
  }
  wait_s = std::min(wait_s, static_cast<double>(kMaxWait.count()));  // before any conversion
  auto wait = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wait_s));
  Clock::time_point deadline = Clock::now() + wait;

  std::unique_lock lock(mu_);
  if (live_.find(name) == live_.end()) {
    return error(404, "unknown service engine \"" + name + "\": register first");
  }
  // The server's threads are shared with reports and the API: when too many polls wait
  // already, this one is answered now (the engine asks again a second later).
  if (wait.count() > 0 && long_polls_ < options_.max_long_polls) {
    ++long_polls_;
    changed_.wait_until(lock, deadline, [&] {
      auto it = live_.find(name);
      return stopping_ || it == live_.end() || it->second.config_revision != known;
    });
    --long_polls_;
  }
  std::optional<SeRecord> se = store_->se(name);
  if (!se) return error(404, "unknown service engine \"" + name + "\": register first");
  if (se->config_revision == known) return Response{304, nullptr, {}};
  Response r = json(200, {{"revision", se->config_revision}, {"config", se->config}});
  r.headers["ETag"] = "\"" + std::to_string(se->config_revision) + "\"";
  return r;
}

Response Service::seReport(const Request& request, const std::string& name) {
  Json body = Json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object()) return error(400, "expected a JSON object");
  std::lock_guard lock(mu_);
  std::optional<SeRecord> se = store_->se(name);
  if (!se) return error(404, "unknown service engine \"" + name + "\": register first");
  bool returned = se->state == "lost";
  {
    Store::Transaction t(*store_);
    const std::string object = "ses/" + name;
    if (returned) {
      se->state = "connected";
      raise("se_returned", object, name + " reports again");
    }
    if (auto it = body.find("acked_revision"); it != body.end() && it->is_number_integer()) {
      int64_t acked = it->get<int64_t>();
      if (acked != se->acked_revision) {
        se->acked_revision = acked;
        raise("config_applied", object,
                         name + " runs configuration revision " + std::to_string(acked),
                         {{"revision", acked}});
      }
    }
    std::string apply_error;
    if (auto it = body.find("apply_error"); it != body.end() && it->is_string()) {
      apply_error = it->get<std::string>();
    }
    if (apply_error != se->apply_error) {
      if (!apply_error.empty()) {
        raise("config_failed", object,
                         name + " could not apply revision " + std::to_string(se->config_revision) +
                             ": " + apply_error,
                         {{"revision", se->config_revision}, {"error", apply_error}});
      }
      se->apply_error = apply_error;
    }
    se->last_report = body;
    store_->putSe(*se);
    monitor_->onReport(name, body, nowMs());
    t.commit();
  }
  live_[name].last_seen = Clock::now();
  if (returned) {
    spdlog::info("controller: SE {} reports again", name);
    reconcile();
  }
  return Response{204, nullptr, {}};
}

void Service::tick(Clock::time_point now) {
  std::lock_guard lock(mu_);
  // The controller itself was stalled (stopped, starved, a stuck disk): the engines' reports are
  // still queued unread, so their silence says nothing. They get se_lost_after from now, as
  // after a restart, rather than all being declared lost and losing their virtual services.
  if (last_tick_ && now - *last_tick_ > std::max<Clock::duration>(options_.se_lost_after / 2,
                                                                   std::chrono::seconds(1))) {
    double gap = std::chrono::duration<double>(now - *last_tick_).count();
    spdlog::warn("controller: {:.1f}s without running its checks: engines get {} ms to report "
                 "before any counts as lost", gap, options_.se_lost_after.count());
    for (auto& [name, live] : live_) live.last_seen = std::max(live.last_seen, now);
  }
  last_tick_ = now;
  bool lost_any = false;
  for (SeRecord& se : store_->ses()) {
    if (se.state != "connected") continue;
    auto it = live_.find(se.name);
    if (it == live_.end()) continue;
    auto silent = now - it->second.last_seen;
    if (silent <= options_.se_lost_after) continue;
    double seconds = std::chrono::duration<double>(silent).count();
    char text[32];
    std::snprintf(text, sizeof text, "%.1fs", seconds);
    Store::Transaction t(*store_);
    se.state = "lost";
    store_->putSe(se);
    raise("se_lost", "ses/" + se.name, se.name + " lost: no report for " + text,
                     {{"silent_s", seconds}});
    t.commit();
    spdlog::warn("controller: SE {} lost (no report for {})", se.name, text);
    lost_any = true;
  }
  if (lost_any) reconcile();

  int64_t now_ms = nowMs();
  if (monitor_->due(now_ms)) {
    std::vector<RaisedEvent> events =
        monitor_->evaluate(currentDocument(), store_->placement(), store_->ses(), now_ms);
    if (!events.empty()) {
      Store::Transaction t(*store_);
      for (const RaisedEvent& e : events) raise(e.type, e.object, e.message, e.details);
      t.commit();
    }
  }
  monitor_->flush(now_ms);
}

void Service::reconcile() {
  Document document = currentDocument();
  std::vector<SeRecord> ses = store_->ses();

  std::vector<SeView> se_views;
  for (const SeRecord& se : ses) {
    se_views.push_back(
        {se.name, se.group, se.state == "connected", reportedConnections(se.last_report)});
  }
  std::vector<VsView> vs_views;
  for (const Json& vs : document["virtual_services"]) {
    vs_views.push_back({vs.value("name", ""), vsGroup(vs)});
  }
  std::vector<GroupView> groups;
  for (const Json& g : document["se_groups"]) {
    GroupView view;
    view.name = g.value("name", "");
    view.max_vs_per_se = groupSetting(g, "max_vs_per_se", view.max_vs_per_se);
    view.min_se_per_vs = groupSetting(g, "min_se_per_vs", view.min_se_per_vs);
    view.spares = groupSetting(g, "spares", view.spares);
    groups.push_back(view);
  }
  Placement current = store_->placement();
  PlacementResult result = place(se_views, vs_views, groups, current);
  if (result.shortfalls != shortfalls_) {
    for (const std::string& s : result.shortfalls) spdlog::warn("controller: placement: {}", s);
    shortfalls_ = result.shortfalls;
  }

  std::set<std::string> existing_vs;
  for (const VsView& v : vs_views) existing_vs.insert(v.name);

  Store::Transaction t(*store_);
  bool changed = false;
  if (result.placement != current) {
    store_->setPlacement(result.placement);
    std::set<std::string> names;
    for (const auto& [vs, _] : current) names.insert(vs);
    for (const auto& [vs, _] : result.placement) names.insert(vs);
    for (const std::string& vs : names) {
      auto before = current.find(vs);
      auto after = result.placement.find(vs);
      std::string object = "virtual_services/" + vs;
      if (before == current.end()) {
        raise("vs_placed", object, vs + " placed on " + joinNames(after->second),
                         {{"ses", after->second}});
      } else if (after == result.placement.end()) {
        std::string why = existing_vs.count(vs) ? "no service engine available" : "deleted";
        for (const std::string& s : result.shortfalls) {
          if (s.rfind(vs + ":", 0) == 0) why = s;
        }
        raise("vs_unplaced", object,
                         vs + " removed from " + joinNames(before->second) + " (" + why + ")",
                         {{"from", before->second}});
      } else if (before->second != after->second) {
        raise(
            "vs_moved", object,
            vs + " moved: " + joinNames(before->second) + " -> " + joinNames(after->second),
            {{"from", before->second}, {"to", after->second}});
      }
    }
    changed = true;
  }

  // An SE's revision changes only when its rendered document does, and always to a revision
  // above every one handed out before (a placement change alone takes a new revision).
  int64_t revision = store_->revision();
  int64_t highest = 0;
  for (const SeRecord& se : ses) highest = std::max(highest, se.config_revision);
  bool woke = false;
  for (SeRecord& se : ses) {
    std::vector<std::string> mine;
    for (const auto& [vs, on] : result.placement) {
      if (std::find(on.begin(), on.end(), se.name) != on.end()) mine.push_back(vs);
    }
    Json config = renderSeConfig(document, mine);
    if (config == se.config) continue;
    if (revision <= highest) {
      revision = store_->bumpRevision();
      highest = revision;
    }
    se.config = std::move(config);
    se.config_revision = revision;
    store_->putSe(se);
    live_[se.name].config_revision = revision;
    woke = true;
    changed = true;
  }
  if (changed) t.commit();
  if (woke) changed_.notify_all();
}

}  // namespace ballast::controller
