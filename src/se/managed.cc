#include "se/managed.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <unistd.h>

#include <httplib.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "config/values.h"
#include "se/resources.h"
#include "se/service_engine.h"
#include "se/snapshot.h"

namespace ballast::se {

using namespace std::chrono_literals;
using Json = nlohmann::json;

namespace managed {

namespace {

// JSON is YAML, but building the node keeps every scalar a plain string, as the loader reads it.
YAML::Node toYaml(const Json& j) {
  switch (j.type()) {
    case Json::value_t::object: {
      YAML::Node node(YAML::NodeType::Map);
      for (const auto& [key, value] : j.items()) node[key] = toYaml(value);
      return node;
    }
    case Json::value_t::array: {
      YAML::Node node(YAML::NodeType::Sequence);
      for (const Json& value : j) node.push_back(toYaml(value));
      return node;
    }
    case Json::value_t::string:
      return YAML::Node(j.get<std::string>());
    case Json::value_t::boolean:
      return YAML::Node(j.get<bool>() ? "true" : "false");
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float:
      return YAML::Node(j.dump());
    default:
      return YAML::Node(YAML::NodeType::Null);
  }
}

config::LoadResult failure(const std::string& source, const std::string& message) {
  config::LoadResult result;
  result.errors.push_back(config::ConfigError{source, 0, "", message});
  return result;
}

}  // namespace

config::LoadResult mergeConfig(const std::string& own_yaml, const Json& controller_config,
                               const std::string& source) {
  if (!controller_config.is_object()) return failure(source, "config: expected an object");
  YAML::Node root(YAML::NodeType::Map);
  try {
    YAML::Node own = own_yaml.empty() ? YAML::Node() : YAML::Load(own_yaml);
    if (own.IsMap()) {
      for (const char* section : {"se", "store"})
        if (own[section]) root[section] = own[section];
    }
  } catch (const YAML::Exception& e) {
    return failure(source, std::string("own settings: ") + e.what());
  }
  // Only what a controller places on an engine. Objects as the API returns them also carry
  // "version", and virtual services their "se_group" (the engine does not need it, and its
  // group is not in this document): both are left out.
  for (const char* kind : {"health_monitors", "pools", "virtual_services"}) {
    Json items = Json::array();
    if (auto found = controller_config.find(kind); found != controller_config.end() && !found->is_null()) {
      if (!found->is_array()) return failure(source, std::string(kind) + ": expected a list");
      for (Json item : *found) {
        if (item.is_object()) {
          item.erase("version");
          if (std::string_view(kind) == "virtual_services") item.erase("se_group");
        }
        items.push_back(std::move(item));
      }
    }
    root[kind] = toYaml(items);
  }
  YAML::Emitter out;
  out << root;
  if (!out.good()) return failure(source, "cannot build the configuration: " + out.GetLastError());
  return config::loadString(out.c_str(), source);
}

std::string describe(const config::LoadResult& result) {
  if (result.errors.empty()) return "";
  const config::ConfigError& e = result.errors.front();
  std::string line = e.key_path.empty() ? e.message : e.key_path + ": " + e.message;
  if (result.errors.size() > 1) line += " (and " + std::to_string(result.errors.size() - 1) + " more)";
  return line;
}

namespace {

// Fields of an entry that are values now (sent as they are), not counters. Only at the top of an
// entry: "max_connections" is also an error kind, a counter, under "errors".
bool isValue(const std::string& key) {
  return key == "connections_active" || key == "connections_idle" || key == "in_flight" ||
         key == "max_connections";
}

// now - before, field by field (counters only grow; one that went down restarts from 0).
Json difference(const Json& now, const Json* before) {
  if (now.is_object()) {
    Json out = Json::object();
    for (const auto& [key, value] : now.items()) {
      const Json* prior = nullptr;
      if (before != nullptr && before->is_object()) {
        auto found = before->find(key);
        if (found != before->end()) prior = &*found;
      }
      out[key] = difference(value, prior);
    }
    return out;
  }
  if (now.is_array()) {
    Json out = Json::array();
    bool aligned = before != nullptr && before->is_array() && before->size() == now.size();
    for (size_t i = 0; i < now.size(); ++i)
      out.push_back(difference(now[i], aligned ? &(*before)[i] : nullptr));
    return out;
  }
  if (now.is_number_integer() && before != nullptr && before->is_number_integer()) {
    uint64_t a = now.get<uint64_t>(), b = before->get<uint64_t>();
    return b <= a ? a - b : a;
  }
  return now;
}

bool isCount(const Json& j) {
  return j.is_number_unsigned() || (j.is_number_integer() && j.get<int64_t>() >= 0);
}

// The [index, count] pairs of a sparse histogram (renderCounters), or nullopt when it is not one.
std::optional<std::vector<std::pair<uint64_t, uint64_t>>> sparseBuckets(const Json& histogram) {
  if (!histogram.is_object()) return std::nullopt;
  auto buckets = histogram.find("buckets");
  if (buckets == histogram.end() || !buckets->is_array()) return std::nullopt;
  std::vector<std::pair<uint64_t, uint64_t>> pairs;
  for (const Json& pair : *buckets) {
    if (!pair.is_array() || pair.size() != 2 || !isCount(pair[0]) || !isCount(pair[1])) return std::nullopt;
    pairs.emplace_back(pair[0].get<uint64_t>(), pair[1].get<uint64_t>());
  }
  return pairs;
}

uint64_t unsignedField(const Json& j, const char* key) {
  auto found = j.find(key);
  return found != j.end() && isCount(*found) ? found->get<uint64_t>() : 0;
}

// A sparse histogram minus the one sent before, sparse again. Sparse lists change length, so
// buckets are matched by index. One that went down (a bucket or the sum) restarts from 0: the
// whole of `now` is the difference, never a mix of two histories.
Json histogramDifference(const Json& now, const Json* before) {
  auto current = sparseBuckets(now);
  if (!current) return now;
  std::optional<std::vector<std::pair<uint64_t, uint64_t>>> prior;
  if (before != nullptr) prior = sparseBuckets(*before);
  if (!prior) return now;
  uint64_t sum_now = unsignedField(now, "sum_us"), sum_before = unsignedField(*before, "sum_us");
  if (sum_now < sum_before) return now;
  Json buckets = Json::array();
  uint64_t count = 0;
  size_t p = 0;
  for (const auto& [index, value] : *current) {
    for (; p < prior->size() && (*prior)[p].first < index; ++p)
      if ((*prior)[p].second > 0) return now;  // a bucket that emptied
    uint64_t old = p < prior->size() && (*prior)[p].first == index ? (*prior)[p++].second : 0;
    if (value < old) return now;
    if (value == old) continue;
    buckets.push_back({index, value - old});
    count += value - old;
  }
  for (; p < prior->size(); ++p)
    if ((*prior)[p].second > 0) return now;
  return {{"buckets", std::move(buckets)}, {"count", count}, {"sum_us", sum_now - sum_before}};
}

// One virtual service or server: counters as differences, values as they are, each phase
// histogram as a sparse difference.
Json entryDifference(const Json& now, const Json* before) {
  if (!now.is_object()) return difference(now, before);
  auto priorOf = [](const Json* parent, const std::string& key) -> const Json* {
    if (parent == nullptr || !parent->is_object()) return nullptr;
    auto found = parent->find(key);
    return found != parent->end() ? &*found : nullptr;
  };
  Json out = Json::object();
  for (const auto& [key, value] : now.items()) {
    const Json* prior = priorOf(before, key);
    if (isValue(key)) {
      out[key] = value;
    } else if (key == "phases" && value.is_object()) {
      Json phases = Json::object();
      for (const auto& [phase, histogram] : value.items())
        phases[phase] = histogramDifference(histogram, priorOf(prior, phase));
      out[key] = std::move(phases);
    } else {
      out[key] = difference(value, prior);
    }
  }
  return out;
}

}  // namespace

Json counterDeltas(const Json& now, const Json& sent) {
  Json out = Json::object();
  for (const char* bounds : {"bounds_seconds", "phase_bounds_us"})
    if (now.contains(bounds)) out[bounds] = now[bounds];
  for (const char* section : {"virtual_services", "servers"}) {
    out[section] = Json::object();
    if (!now.contains(section)) continue;
    for (const auto& [name, value] : now[section].items()) {
      const Json* prior = nullptr;
      if (sent.contains(section) && sent[section].contains(name)) prior = &sent[section][name];
      out[section][name] = entryDifference(value, prior);
    }
  }
  return out;
}

void markSent(const Json& now, Json* sent) {
  if (!sent->is_object()) *sent = Json::object();
  for (const char* section : {"virtual_services", "servers"}) {
    if (!now.contains(section)) continue;
    for (const auto& [name, value] : now[section].items()) (*sent)[section][name] = value;
  }
}

Backoff::Backoff(std::chrono::milliseconds first, std::chrono::milliseconds max)
    : first_(first), max_(max), current_(first), random_(static_cast<unsigned>(::getpid()) ^
                                                        static_cast<unsigned>(std::chrono::steady_clock::now()
                                                                                  .time_since_epoch()
                                                                                  .count())) {}

std::chrono::milliseconds Backoff::next() {
  std::chrono::milliseconds delay = current_;
  current_ = std::min(current_ * 2, max_);
  auto half = delay.count() / 2;
  std::uniform_int_distribution<long long> jitter(0, half);
  return std::chrono::milliseconds(delay.count() - jitter(random_));
}

namespace {

constexpr const char* kDocumentFile = "config.json";

bool writeAll(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

bool saveDocument(const std::string& dir, const KeptDocument& doc, std::string* error) {
  std::string path = dir + "/" + kDocumentFile;
  std::string temporary = dir + "/." + kDocumentFile + ".tmp";
  std::string text = Json{{"revision", doc.revision}, {"config", doc.config}}.dump(1) + "\n";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    *error = temporary + ": " + std::strerror(errno);
    return false;
  }
  // Written and synced before the rename: after a crash the file is the old or the new one.
  bool ok = writeAll(fd, text) && ::fsync(fd) == 0;
  int saved = errno;
  ::close(fd);
  if (!ok || ::rename(temporary.c_str(), path.c_str()) != 0) {
    if (ok) saved = errno;
    *error = path + ": " + std::strerror(saved);
    ::unlink(temporary.c_str());
    return false;
  }
  int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);  // the rename itself
    ::close(dir_fd);
  }
  return true;
}

std::optional<KeptDocument> loadDocument(const std::string& dir, std::string* error) {
  error->clear();
  std::string path = dir + "/" + kDocumentFile;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT) *error = path + ": " + std::strerror(errno);
    return std::nullopt;
  }
  std::string text;
  char buffer[64 * 1024];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof buffer)) > 0) text.append(buffer, static_cast<size_t>(n));
  ::close(fd);
  std::optional<KeptDocument> doc = parseDocument(text);
  if (!doc) *error = path + ": not a kept configuration (expected {\"revision\", \"config\"})";
  return doc;
}

std::optional<KeptDocument> parseDocument(const std::string& text) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  auto revision = j.find("revision");
  auto config = j.find("config");
  if (revision == j.end() || !revision->is_number_integer() || config == j.end() || !config->is_object())
    return std::nullopt;
  return KeptDocument{revision->get<int64_t>(), *config};
}

}  // namespace managed

namespace {

// One answer from the controller; status 0 when there was none (error says why).
struct Answer {
  int status = 0;
  std::string body;
  std::string error;
  bool authFailed() const { return status == 401 || status == 403; }
};

// An HTTP client of the controller for one thread (httplib clients are not shared).
class ControllerLink {
 public:
  ControllerLink(const std::string& url, const std::string& token) : client_(url) {
    client_.set_bearer_token_auth(token);
    client_.set_connection_timeout(1s);
    client_.set_write_timeout(5s);
    client_.set_keep_alive(true);
  }
  bool valid() const { return client_.is_valid(); }

  Answer get(const std::string& path, std::chrono::seconds timeout) {
    client_.set_read_timeout(timeout);
    return answer(client_.Get(path));
  }
  Answer post(const std::string& path, const Json& body) {
    client_.set_read_timeout(5s);
    std::string text = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return answer(client_.Post(path, text, "application/json"));
  }
  // From another thread: ends the request in progress (if any) at once.
  void cancel() { client_.stop(); }

 private:
  static Answer answer(const httplib::Result& result) {
    if (!result) return Answer{0, "", httplib::to_string(result.error())};
    return Answer{result->status, result->body, ""};
  }

  httplib::Client client_;
};

// What is wrong with talking to the controller, logged once per change (not once per retry).
class ProblemLog {
 public:
  explicit ProblemLog(std::string what) : what_(std::move(what)) {}
  void failed(const Answer& a) {
    // Logged when the kind of problem changes (not its details: a restarting controller
    // refuses, then resets, then times out).
    std::string kind = a.status == 0 ? "unreachable" : std::to_string(a.status);
    if (kind == last_) return;
    last_ = kind;
    std::string problem;
    if (a.status == 0) {
      problem = "controller unreachable (" + a.error + "); retrying, serving what this engine has meanwhile";
    } else if (a.authFailed()) {
      // Never the token itself.
      problem = "controller refused this engine's token (HTTP " + std::to_string(a.status) +
                "): check --token-file and the controller's --se-token-file; retrying every 10s";
    } else {
      problem = "controller answered HTTP " + std::to_string(a.status) + ": " + a.body.substr(0, 200);
    }
    if (a.authFailed()) spdlog::error("{}: {}", what_, problem);
    else spdlog::warn("{}: {}", what_, problem);
  }
  void succeeded() {
    if (!last_.empty()) spdlog::info("{}: controller reachable again", what_);
    last_.clear();
  }

 private:
  std::string what_;
  std::string last_;
};

// "resources" of a report: what the process uses now, and CPU over the interval since `before`.
struct CpuMark {
  double seconds = processCpuSeconds();
  std::chrono::steady_clock::time_point at = std::chrono::steady_clock::now();
};

Json resourcesJson(const ProcessResources& r, const CpuMark& before, std::chrono::steady_clock::time_point now,
                   const Json& counters) {
  // Client connections open now over all virtual services (a gauge of each).
  uint64_t connections = 0;
  if (auto vss = counters.find("virtual_services"); vss != counters.end() && vss->is_object())
    for (const Json& vs : *vss)
      if (auto active = vs.find("connections_active"); active != vs.end() && active->is_number_unsigned())
        connections += active->get<uint64_t>();
  double interval = std::chrono::duration<double>(now - before.at).count();
  return {{"cpu_percent", cpuPercent(r.cpu_seconds - before.seconds, interval, r.cpu_cores)},
          {"cpu_cores", r.cpu_cores},
          {"memory_rss_bytes", r.memory_rss_bytes},
          {"memory_total_bytes", r.memory_total_bytes},
          {"connections_active", connections},
          {"open_files", r.open_files},
          {"max_open_files", r.max_open_files}};
}

constexpr auto kAuthRetry = 10s;
constexpr auto kLongPollWait = 30s;
constexpr auto kShortPollInterval = 1s;  // when the controller answers a long poll at once

std::string defaultAddress() {
  // The first IPv4 address of an interface that is up and not loopback.
  ifaddrs* list = nullptr;
  std::string found;
  if (::getifaddrs(&list) == 0) {
    for (ifaddrs* i = list; i != nullptr && found.empty(); i = i->ifa_next) {
      if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
      if ((i->ifa_flags & IFF_UP) == 0 || (i->ifa_flags & IFF_LOOPBACK) != 0) continue;
      char text[INET_ADDRSTRLEN];
      auto* in = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
      if (::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text) != nullptr) found = text;
    }
    ::freeifaddrs(list);
  }
  return found.empty() ? "127.0.0.1" : found;
}

// The --config file of a managed engine: only its own `se` and `store` (what it serves comes
// from the controller). Its YAML text, or nullopt with *error set.
std::optional<std::string> loadOwnSettings(const std::string& path, std::string* error) {
  if (path.empty()) return std::string();
  config::LoadResult loaded = config::loadFile(path);
  if (!loaded.ok()) {
    for (const config::ConfigError& e : loaded.errors) *error += e.toString() + "\n";
    return std::nullopt;
  }
  const config::Config& c = *loaded.config;
  if (!c.virtual_services.empty() || !c.pools.empty() || !c.health_monitors.empty() || !c.se_groups.empty()) {
    *error = path + ": a managed engine takes only `se` and `store` from its file (virtual services, "
                    "pools and health monitors come from the controller)\n";
    return std::nullopt;
  }
  try {
    YAML::Node root = YAML::LoadFile(path);
    YAML::Node own(YAML::NodeType::Map);
    for (const char* section : {"se", "store"})
      if (root.IsMap() && root[section]) own[section] = root[section];
    YAML::Emitter out;
    out << own;
    return std::string(out.c_str());
  } catch (const YAML::Exception& e) {
    *error = path + ": " + e.what() + "\n";
    return std::nullopt;
  }
}

class ManagedEngine {
 public:
  ManagedEngine(const ManagedOptions& options, const std::string& token, std::string own_yaml)
      : options_(options),
        poll_link_(options.controller_url, token),
        report_link_(options.controller_url, token),
        report_interval_ms_(options.report_interval.count()) {
    own_yaml_ = std::move(own_yaml);
    if (options_.address.empty()) options_.address = defaultAddress();
  }

  bool valid() const { return poll_link_.valid() && report_link_.valid(); }
  int run(std::optional<managed::KeptDocument> kept);

 private:
  std::string source(int64_t revision) const {
    return "controller " + options_.controller_url + " revision " + std::to_string(revision);
  }
  std::string sePath(const std::string& rest) const { return "/api/v1/se/" + options_.name + rest; }
  bool startWith(const std::optional<managed::KeptDocument>& doc, std::string* error);
  bool registerWith(ControllerLink& link, ProblemLog& problems);
  // A document from GET .../config: applied (or refused, running the previous one).
  void applyDocument(const std::string& body);
  void followConfig();
  void reportLoop();
  Answer sendReport(std::chrono::steady_clock::time_point* last_sent, ProblemLog& problems);
  config::LoadResult reloadSource();
  // Sleeps, or less when stopping; false when stopping.
  bool pause(std::chrono::milliseconds delay);
  bool stopping() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stopping_;
  }
  void stopThreads();

  ManagedOptions options_;
  std::unique_ptr<ServiceEngine> engine_;
  ControllerLink poll_link_, report_link_;
  std::thread config_thread_, report_thread_;
  std::atomic<bool> config_done_{false}, report_done_{false};
  std::atomic<bool> registered_{false};
  std::atomic<int64_t> report_interval_ms_;
  // The controller's --se-lost-after (3 s unless it says otherwise at registration): reports are
  // retried often enough that a controller coming back hears from this engine before then.
  std::atomic<int64_t> lost_after_ms_{3000};

  std::mutex mutex_;  // what follows
  std::condition_variable wake_;
  bool stopping_ = false;
  bool report_now_ = false;
  std::string own_yaml_;
  managed::KeptDocument running_;  // the document applied now (revision 0, empty: none yet)
  int64_t acked_ = 0;              // its revision, once it runs
  int64_t known_ = 0;              // the last revision seen (applied or refused)
  std::optional<std::string> apply_error_;
  Json sent_counters_ = Json::object();
  // Report thread only: CPU time when the last report reached the controller (at first: when
  // this engine started), so cpu_percent covers the same interval as interval_s after the first.
  CpuMark cpu_sent_;
};

bool ManagedEngine::pause(std::chrono::milliseconds delay) {
  std::unique_lock<std::mutex> lock(mutex_);
  wake_.wait_for(lock, delay, [this] { return stopping_; });
  return !stopping_;
}

bool ManagedEngine::registerWith(ControllerLink& link, ProblemLog& problems) {
  Json body = {{"name", options_.name},
               {"address", options_.address},
               {"se_group", options_.se_group},
               {"version", BALLAST_VERSION}};
  Answer a = link.post("/api/v1/se/register", body);
  if (a.status != 200 && a.status != 201) {
    problems.failed(a);
    return false;
  }
  problems.succeeded();
  Json answer = Json::parse(a.body, nullptr, false);
  auto positive = [&](const char* key, std::atomic<int64_t>* out) {
    if (!answer.is_object()) return;
    auto found = answer.find(key);
    if (found != answer.end() && found->is_number_integer() && found->get<int64_t>() > 0)
      *out = found->get<int64_t>();
  };
  positive("heartbeat_interval_ms", &report_interval_ms_);  // the controller's wins
  positive("lost_after_ms", &lost_after_ms_);
  if (!registered_.exchange(true))
    spdlog::info("registered with controller {} as {} (group {}, address {}); reporting every {} ms",
                 options_.controller_url, options_.name, options_.se_group, options_.address,
                 report_interval_ms_.load());
  return true;
}

bool ManagedEngine::startWith(const std::optional<managed::KeptDocument>& doc, std::string* error) {
  managed::KeptDocument next = doc ? *doc : managed::KeptDocument{0, Json::object()};
  std::string own;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    own = own_yaml_;
  }
  config::LoadResult loaded = managed::mergeConfig(own, next.config, source(next.revision));
  if (!loaded.ok()) {
    *error = managed::describe(loaded);
    return false;
  }
  auto engine = std::make_unique<ServiceEngine>(loaded.config);
  engine->shareListenAddresses(true);
  // Room for the heads an HTTP virtual service with default limits takes, so that the first
  // one placed here does not need a restart (a larger max_header_size still does).
  config::Config probe = *loaded.config;
  probe.virtual_services.assign(1, config::VirtualService{});
  engine->reserveBufferBlock(bufferBlockSize(probe));
  engine->setReloadSource([this] { return reloadSource(); });
  managed::KeptDocument previous;
  {
    // Set before the admin listener starts: a POST /reload right away builds on this document.
    std::lock_guard<std::mutex> lock(mutex_);
    previous = running_;
    running_ = next;
  }
  if (!engine->start(error)) {
    std::lock_guard<std::mutex> lock(mutex_);
    running_ = previous;
    return false;
  }
  engine_ = std::move(engine);
  std::lock_guard<std::mutex> lock(mutex_);
  acked_ = next.revision;
  return true;
}

int ManagedEngine::run(std::optional<managed::KeptDocument> kept) {
  // Ask the controller first, briefly: a kept configuration may be out of date. When it cannot
  // be reached, serve the kept one at once.
  std::optional<managed::KeptDocument> fetched;
  ProblemLog start_problems("start");
  if (registerWith(poll_link_, start_problems)) {
    std::string known = std::to_string(kept ? kept->revision : 0);
    Answer a = poll_link_.get(sePath("/config?known=" + known + "&wait=0"), 3s);
    if (a.status == 200) fetched = managed::parseDocument(a.body);
    if (a.status != 304 && !fetched) start_problems.failed(a);
  } else if (kept) {
    spdlog::warn("serving the kept configuration (revision {}, {}) until the controller answers",
                 kept->revision, options_.state_dir);
  }
  // The newest document that can be served, else nothing (the controller will say).
  std::vector<std::optional<managed::KeptDocument>> candidates;
  if (fetched) candidates.push_back(fetched);
  if (kept) candidates.push_back(kept);
  candidates.push_back(std::nullopt);
  for (const auto& candidate : candidates) {
    std::string error;
    if (startWith(candidate, &error)) break;
    if (!candidate) {
      spdlog::error("{}", error);
      return 1;
    }
    spdlog::error("cannot serve revision {}: {}", candidate->revision, error);
    if (fetched && candidate->revision == fetched->revision) apply_error_ = error;
  }
  managed::KeptDocument running;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    running = running_;
    known_ = fetched ? fetched->revision : running.revision;
  }
  if (fetched && running.revision == fetched->revision) {
    std::string error;
    if (!managed::saveDocument(options_.state_dir, running, &error))
      spdlog::error("cannot keep the configuration: {}", error);
  }
  spdlog::info("managed by {}: running revision {} ({} virtual services)", options_.controller_url,
               running.revision,
               running.config.contains("virtual_services") ? running.config["virtual_services"].size() : 0);

  report_now_ = true;  // the first report (with the revision running) goes at once
  config_thread_ = std::thread([this] {
    followConfig();
    config_done_ = true;
  });
  report_thread_ = std::thread([this] {
    reportLoop();
    report_done_ = true;
  });

  engine_->waitForStopSignal();
  stopThreads();
  engine_->shutdown();
  return 0;
}

void ManagedEngine::stopThreads() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  // A thread may be between its check of stopping_ and a request: cancel until both are out.
  while (!config_done_ || !report_done_) {
    poll_link_.cancel();
    report_link_.cancel();
    std::this_thread::sleep_for(20ms);
  }
  config_thread_.join();
  report_thread_.join();
}

void ManagedEngine::applyDocument(const std::string& body) {
  std::optional<managed::KeptDocument> parsed = managed::parseDocument(body);
  if (!parsed) {
    spdlog::error("controller sent a configuration that is not {{\"revision\", \"config\"}}; ignored");
    Json j = Json::parse(body, nullptr, false);
    bool numbered = j.is_object() && j.contains("revision") && j["revision"].is_number_integer();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      apply_error_ = "not a configuration document: expected {\"revision\", \"config\"}";
      report_now_ = true;
      // Wait for the next revision rather than ask again at once for this one.
      if (numbered) known_ = j["revision"].get<int64_t>();
    }
    wake_.notify_all();
    if (!numbered) pause(1s);
    return;
  }
  const managed::KeptDocument& doc = *parsed;
  std::string own;
  managed::KeptDocument previous;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    known_ = doc.revision;
    own = own_yaml_;
    previous = running_;
    // Before applying: a reload meanwhile (SIGHUP) builds on this document, not the previous one.
    running_ = doc;
  }
  config::LoadResult loaded = managed::mergeConfig(own, doc.config, source(doc.revision));
  std::string error;
  if (!loaded.ok()) {
    error = managed::describe(loaded);
  } else {
    ReloadResult result = engine_->apply(loaded.config);
    if (!result.ok) error = result.errors.empty() ? "not applied" : result.errors.front();
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (error.empty()) {
      acked_ = doc.revision;
      apply_error_.reset();
    } else {
      running_ = previous;
      apply_error_ = error;
    }
    report_now_ = true;  // tell the controller at once
  }
  wake_.notify_all();
  if (!error.empty()) {
    spdlog::error("revision {} refused: {}; still running revision {}", doc.revision, error,
                  previous.revision);
    return;
  }
  spdlog::info("revision {} applied", doc.revision);
  std::string save_error;
  if (!managed::saveDocument(options_.state_dir, doc, &save_error))
    spdlog::error("cannot keep the configuration: {}", save_error);
}

void ManagedEngine::followConfig() {
  managed::Backoff backoff(100ms, 5s);
  ProblemLog problems("configuration");
  while (!stopping()) {
    if (!registered_ && !registerWith(poll_link_, problems)) {
      pause(std::chrono::milliseconds(backoff.next()));
      continue;
    }
    int64_t known;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      known = known_;
    }
    std::string query = "?known=" + std::to_string(known) + "&wait=" + std::to_string(kLongPollWait.count());
    auto asked = std::chrono::steady_clock::now();
    Answer a = poll_link_.get(sePath("/config" + query), kLongPollWait + 10s);
    if (stopping()) break;
    if (a.status == 200 || a.status == 304) {
      problems.succeeded();
      backoff.reset();
      if (a.status == 200) applyDocument(a.body);
      // "No change" long before the wait is over: the controller did not hold the poll (too
      // many wait already, or it is stopping); ask again a little later, not at once.
      if (a.status == 304 && std::chrono::steady_clock::now() - asked < kLongPollWait / 2) {
        pause(kShortPollInterval);
      }
      continue;
    }
    if (a.status == 404) {  // the controller does not know this engine (any more)
      registered_ = false;
      pause(backoff.next());
      continue;
    }
    problems.failed(a);
    if (a.authFailed()) {
      registered_ = false;
      pause(kAuthRetry);
    } else {
      pause(backoff.next());
    }
  }
}

Answer ManagedEngine::sendReport(std::chrono::steady_clock::time_point* last_sent, ProblemLog& problems) {
  auto now = std::chrono::steady_clock::now();
  Json counters = engine_->countersJson();
  ProcessResources resources = readProcessResources();
  Json body;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    body["acked_revision"] = acked_;
    body["apply_error"] = apply_error_ ? Json(*apply_error_) : Json(nullptr);
    body["counters"] = managed::counterDeltas(counters, sent_counters_);
  }
  body["status"] = Json::parse(engine_->statusJson(), nullptr, false);
  body["interval_s"] = std::chrono::duration<double>(now - *last_sent).count();
  body["resources"] = resourcesJson(resources, cpu_sent_, now, counters);
  Answer a = report_link_.post(sePath("/report"), body);
  if (a.status == 404) {
    // Not known (a controller that lost its state, or an SE deleted there): register again.
    registered_ = false;
    if (registerWith(report_link_, problems)) a = report_link_.post(sePath("/report"), body);
  }
  if (a.status < 200 || a.status > 299) {
    problems.failed(a);
    return a;
  }
  problems.succeeded();
  std::lock_guard<std::mutex> lock(mutex_);
  // Only counters the controller received count as sent: after a failure the next report
  // carries them.
  managed::markSent(counters, &sent_counters_);
  *last_sent = now;
  cpu_sent_ = CpuMark{resources.cpu_seconds, now};
  return a;
}

void ManagedEngine::reportLoop() {
  managed::Backoff backoff(100ms, 5s);
  ProblemLog problems("report");
  auto last_sent = std::chrono::steady_clock::now();
  std::chrono::milliseconds delay(report_interval_ms_.load());
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait_for(lock, delay, [this] { return stopping_ || report_now_; });
      if (stopping_) return;
      report_now_ = false;
    }
    backoff.setMax(std::clamp(std::chrono::milliseconds(lost_after_ms_.load() / 2), 100ms,
                              std::chrono::milliseconds(5s)));
    Answer a = sendReport(&last_sent, problems);
    if (a.status >= 200 && a.status <= 299) {
      backoff.reset();
      delay = std::chrono::milliseconds(report_interval_ms_.load());
    } else {
      delay = a.authFailed() ? std::chrono::milliseconds(kAuthRetry) : backoff.next();
    }
  }
}

config::LoadResult ManagedEngine::reloadSource() {
  // SIGHUP / POST /reload: the own file again, with the document running now.
  std::string error;
  std::optional<std::string> own = loadOwnSettings(options_.config_path, &error);
  if (!own) {
    config::LoadResult failed;
    std::string message(config::stripTrailingWhitespace(error));
    failed.errors.push_back(config::ConfigError{"", 0, "", message});
    return failed;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  own_yaml_ = *own;
  return managed::mergeConfig(own_yaml_, running_.config, source(running_.revision));
}

}  // namespace

int runManaged(const ManagedOptions& given) {
  setUpLogging();
  ManagedOptions options = given;
  while (!options.controller_url.empty() && options.controller_url.back() == '/')
    options.controller_url.pop_back();
  if (!config::isValidName(options.name) || options.name == "." || options.name == "..") {
    spdlog::error("--name: expected a name of 1-64 characters from A-Z a-z 0-9 _ . -");
    return 2;
  }
  if (options.state_dir.empty()) options.state_dir = "/var/lib/ballast/" + options.name;

  std::string token;
  {
    int fd = ::open(options.token_file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      spdlog::error("--token-file {}: {}", options.token_file, std::strerror(errno));
      return 1;
    }
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(fd, buffer, sizeof buffer)) > 0) token.append(buffer, static_cast<size_t>(n));
    ::close(fd);
    token = std::string(config::stripTrailingWhitespace(token));
    if (token.empty()) {
      spdlog::error("--token-file {}: empty", options.token_file);
      return 1;
    }
  }
  std::string error;
  std::optional<std::string> own = loadOwnSettings(options.config_path, &error);
  if (!own) {
    std::fprintf(stderr, "%s", error.c_str());
    return 1;
  }
  std::error_code ec;
  std::filesystem::create_directories(options.state_dir, ec);
  if (ec) {
    spdlog::error("--state-dir {}: {}", options.state_dir, ec.message());
    return 1;
  }
  std::optional<managed::KeptDocument> kept = managed::loadDocument(options.state_dir, &error);
  if (!error.empty()) spdlog::warn("{}; starting without it", error);

  blockEngineSignals();

  ManagedEngine engine(options, token, *own);
  if (!engine.valid()) {
    spdlog::error("--controller {}: expected http://host:port or https://host:port", options.controller_url);
    return 2;
  }
  return engine.run(std::move(kept));
}

}  // namespace ballast::se
