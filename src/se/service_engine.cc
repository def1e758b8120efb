#include "se/service_engine.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <optional>
#include <chrono>
#include <cstdio>
#include <set>
#include <thread>

#include "core/event_loop.h"
#include "core/socket.h"
#include "se/report.h"
#include "se/snapshot.h"

namespace ballast::se {

namespace {

ListenOptions listenOptionsFor(const config::VirtualService& vs) {
  ListenOptions options;
  // HTTP clients speak first: wake up once, with the request to read.
  if (vs.protocol == config::Protocol::Http) options.defer_accept_seconds = 1;
  return options;
}

void closeAll(const std::vector<std::vector<std::vector<int>>>& fds) {
  for (const auto& worker : fds)
    for (const auto& vs : worker)
      for (int fd : vs) ::close(fd);
}

// Settings that only a restart changes: a reload keeps the running values and says so.
std::vector<std::string> restartOnlyChanges(const config::Config& running, const config::Config& next) {
  std::vector<std::string> notes;
  if (running.se.workers != next.se.workers) notes.push_back("se.workers changes at the next restart");
  if (running.se.admin_text != next.se.admin_text) notes.push_back("se.admin changes at the next restart");
  if (running.se.control_socket != next.se.control_socket)
    notes.push_back("se.control_socket changes at the next restart");
  if (running.se.buffer_size != next.se.buffer_size)
    notes.push_back("se.buffer_size changes at the next restart");
  if (running.store.type != next.store.type || running.store.redis.address_text != next.store.redis.address_text ||
      running.store.redis.prefix != next.store.redis.prefix ||
      running.store.redis.password != next.store.redis.password ||
      running.store.cache_size != next.store.cache_size)
    notes.push_back("store changes at the next restart");
  return notes;
}

}  // namespace

ServiceEngine::ServiceEngine(std::shared_ptr<const config::Config> config, std::string takeover)
    : config_(std::move(config)),
      takeover_(std::move(takeover)),
      stats_(config_->se.workers),
      health_(events_) {}

ServiceEngine::~ServiceEngine() {
  shutdown();
  health_.stop();
  // The workers' store connections go before the store they belong to.
  workers_.clear();
  if (store_) store_->stop();
  persistence_.reset();
  store_.reset();
}

std::shared_ptr<const proxy::Snapshot> ServiceEngine::build(
    std::shared_ptr<const config::Config> config, std::vector<std::string>* errors) {
  auto snapshot = buildSnapshot(config, stats_);
  auto* mutable_snapshot = const_cast<proxy::Snapshot*>(snapshot.get());
  for (const config::VirtualService& vs : config->virtual_services) {
    std::shared_ptr<AccessLog> log;
    if (!vs.access_log.empty()) {
      auto found = access_logs_.find(vs.access_log);
      auto same = std::find_if(config->virtual_services.begin(), config->virtual_services.end(),
                               [&](const config::VirtualService& o) { return o.access_log == vs.access_log; });
      size_t first = static_cast<size_t>(same - config->virtual_services.begin());
      if (found != access_logs_.end()) {
        log = found->second;
      } else if (first < mutable_snapshot->access_logs.size()) {
        log = mutable_snapshot->access_logs[first];  // another virtual service writes there too
      } else {
        std::string error;
        log = AccessLog::open(vs.access_log, config_->se.workers, &error);
        if (!log) {
          errors->push_back("virtual service " + vs.name + ": " + error);
          return nullptr;
        }
      }
    }
    mutable_snapshot->access_logs.push_back(log);
  }
  return snapshot;
}

bool ServiceEngine::openListeners(const config::Config& config, ListenerFds* inherited,
                                  std::vector<std::vector<std::vector<int>>>* per_worker,
                                  std::string* error) {
  size_t workers = config_->se.workers;
  per_worker->assign(workers, std::vector<std::vector<int>>(config.virtual_services.size()));
  std::lock_guard<std::mutex> lock(listeners_mutex_);
  std::set<std::string> seen;
  for (size_t i = 0; i < config.virtual_services.size(); ++i) {
    const config::VirtualService& vs = config.virtual_services[i];
    std::string address = vs.listen.toString();
    if (listen_fds_.count(address) || !seen.insert(address).second) continue;  // already open
    std::vector<int> fds;
    if (inherited != nullptr) {
      auto found = inherited->find(address);
      if (found != inherited->end()) {
        fds = std::move(found->second);
        inherited->erase(found);
        // The previous process may have served it with another protocol.
        for (int fd : fds) setDeferAccept(fd, listenOptionsFor(vs).defer_accept_seconds);
      }
    }
    if (fds.empty() && !share_listen_addresses_ && addressInUse(vs.listen)) {
      *error = "virtual service " + vs.name + ": " + vs.listen.toString() +
               " is already in use (by another service engine? to replace a running one, start "
               "with --takeover)";
      closeAll(*per_worker);
      per_worker->clear();
      return false;
    }
    // Every worker gets at least one socket; inherited ones beyond that are shared out too (a
    // socket closed here would lose the connections waiting in its queue).
    while (fds.size() < workers) {
      int fd = listenTcp(vs.listen, listenOptionsFor(vs), error);
      if (fd < 0) {
        *error = "virtual service " + vs.name + ": " + *error;
        for (int f : fds) ::close(f);
        closeAll(*per_worker);
        per_worker->clear();
        return false;
      }
      fds.push_back(fd);
    }
    for (size_t j = 0; j < fds.size(); ++j) (*per_worker)[j % workers][i].push_back(fds[j]);
  }
  // Commit: these addresses are open now.
  for (size_t i = 0; i < config.virtual_services.size(); ++i) {
    std::string address = config.virtual_services[i].listen.toString();
    for (size_t w = 0; w < workers; ++w)
      for (int fd : (*per_worker)[w][i]) listen_fds_[address].push_back(fd);
  }
  return true;
}

bool ServiceEngine::start(std::string* error) {
  start_ms_ = monotonicMs();
  long fd_limit = raiseFileLimit();
  std::vector<std::string> errors;
  snapshot_ = build(config_, &errors);
  if (!snapshot_) {
    *error = errors.front();
    return false;
  }
  for (size_t i = 0; i < config_->virtual_services.size(); ++i)
    if (snapshot_->access_logs[i]) access_logs_[config_->virtual_services[i].access_log] = snapshot_->access_logs[i];
  size_t workers = config_->se.workers;
  block_size_ = std::max(bufferBlockSize(*config_), min_block_size_);

  // Take the running engine's sockets (binary upgrade), then bind what is still missing: a port
  // in use is reported before anything starts.
  // The control socket first: a second engine started on a live one refuses to start (a
  // successor taking over binds it once the old engine has let go of it).
  if (takeover_.empty() && !startControl(error)) return false;
  ListenerFds inherited;
  int takeover_conn = -1;
  if (!takeover_.empty()) {
    if (!receiveListeners(takeover_, &takeover_conn, &inherited, error)) return false;
    size_t n = 0;
    for (auto& [address, fds] : inherited) n += fds.size();
    spdlog::info("takeover: received {} listening sockets from the running service engine", n);
  }
  std::vector<std::vector<std::vector<int>>> fds;
  if (!openListeners(*config_, &inherited, &fds, error)) {
    if (takeover_conn >= 0) ::close(takeover_conn);
    return false;
  }
  // Inherited sockets of addresses this configuration does not serve.
  for (auto& [address, list] : inherited) {
    spdlog::warn("takeover: {} is not in this configuration; closing its listening socket", address);
    for (int fd : list) ::close(fd);
  }
  for (size_t w = 0; w < workers; ++w) {
    workers_.push_back(std::make_unique<Worker>(w, block_size_, &events_));
    workers_.back()->apply(snapshot_, fds[w]);
  }
  if (!startStore(error)) {
    workers_.clear();
    if (takeover_conn >= 0) ::close(takeover_conn);
    return false;
  }
  // The admin listener last: it answers /status and /state, which read the store.
  if (config_->se.admin) {
    // SO_REUSEPORT would let a second engine share it, answering /status and /reload at random:
    // only the engine taken over may still hold it.
    if (takeover_conn < 0 && addressInUse(*config_->se.admin)) {
      *error = "admin: " + config_->se.admin_text +
               " is already in use (by another service engine? to replace a running one, start "
               "with --takeover)";
      workers_.clear();  // never started: nothing to drain; their listeners close the sockets
      return false;
    }
    admin_ = std::make_unique<AdminServer>(AdminServer::Handlers{
        [this] { return statusJson(); }, [this] { return metricsText(); },
        [this](std::string_view query) { return stateJson(query); },
        [this] {
          ReloadResult r = reload();
          nlohmann::json j{{"ok", r.ok}, {"errors", r.errors}, {"notes", r.notes}};
          return std::make_pair(
              r.ok, j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
        }});
    if (!admin_->start(*config_->se.admin, error)) {
      admin_.reset();
      workers_.clear();
      if (takeover_conn >= 0) ::close(takeover_conn);
      return false;
    }
  }
  for (auto& w : workers_) w->start();
  startHealth();
  spdlog::info("ballast {} service engine: {} workers, {} virtual services, fd limit {}",
               BALLAST_VERSION, workers, config_->virtual_services.size(), fd_limit);
  for (const config::VirtualService& vs : config_->virtual_services)
    spdlog::info("virtual service {}: {} {} -> pool {}", vs.name, config::toString(vs.protocol),
                 vs.listen_text, vs.pool);
  if (config_->se.admin) spdlog::info("admin: http://{}/status", config_->se.admin_text);

  if (takeover_conn >= 0) {
    confirmTakeover(takeover_conn);  // the old engine stops accepting and drains from here
    spdlog::info("takeover: done; the previous service engine drains and exits");
  }
  if (takeover_conn >= 0 && !startControl(error)) {
    // We serve already and the old engine is draining: carry on; only the next binary upgrade
    // is affected.
    spdlog::error("{}", *error);
    error->clear();
  }
  return true;
}

bool ServiceEngine::startControl(std::string* error) {
  if (config_->se.control_socket.empty()) return true;
  control_ = std::make_unique<ControlServer>(
      config_->se.control_socket, [this] { return listenerFds(); },
      [] { kill(getpid(), SIGTERM); });  // handed over: drain as on SIGTERM
  if (control_->start(error)) return true;
  control_.reset();
  return false;
}

bool ServiceEngine::startStore(std::string*) {
  const config::StoreSettings& settings = config_->store;
  if (settings.type == "redis") {
    state::RedisSettings r;
    r.host = settings.redis.address.hostString();
    r.port = settings.redis.address.port();
    r.password = settings.redis.password;
    r.prefix = settings.redis.prefix;
    r.connect_timeout = settings.redis.connect_timeout;
    r.command_timeout = settings.redis.timeout;
    r.workers = workers_.size();
    store_ = state::makeRedisBackend(r);
  } else {
    store_ = state::makeMemoryBackend();
  }
  persistence_ = std::make_unique<proxy::PersistenceShared>(*store_, settings.cache_size);
  for (auto& w : workers_) w->attachStore(*store_, *persistence_);
  // Another engine replaced or removed an entry: this engine's copy goes.
  store_->onChange([this](std::string_view key) { persistence_->cache.invalidate(key); });
  // The store is back: write what was decided without it (on one worker, with its connection).
  store_->onReconnect([this] {
    Worker* w = workers_.front().get();
    w->post([w] {
      if (w->persistence() != nullptr) w->persistence()->resync();
    });
    events_.emit({"store_reachable", {{"type", config_->store.type}}});
  });
  // A store that cannot be reached now is no reason not to serve: decisions are made without it
  // meanwhile (degraded mode) and written when it comes.
  store_->start();
  if (settings.type == "redis")
    spdlog::info("store: redis at {} (prefix {})", settings.redis.address_text, settings.redis.prefix);
  return true;
}

void ServiceEngine::startHealth() {
  auto snap = snapshot();
  health_.apply(std::shared_ptr<const std::vector<lb::Pool>>(snap, &snap->pools));
  health_.start();
}

ListenerFds ServiceEngine::listenerFds() const {
  std::lock_guard<std::mutex> lock(listeners_mutex_);
  return listen_fds_;
}

ReloadResult ServiceEngine::reload() {
  std::lock_guard<std::mutex> reload_lock(reload_mutex_);
  return applyLocked(reload_source_ ? reload_source_() : config::loadFile(config_->source), true);
}

ReloadResult ServiceEngine::apply(std::shared_ptr<const config::Config> next) {
  std::lock_guard<std::mutex> reload_lock(reload_mutex_);
  config::LoadResult loaded;
  loaded.config = std::move(next);
  return applyLocked(loaded, false);
}

ReloadResult ServiceEngine::applyText(const std::string& text, const std::string& source_name) {
  std::lock_guard<std::mutex> reload_lock(reload_mutex_);
  return applyLocked(config::loadString(text, source_name), false);
}

ReloadResult ServiceEngine::applyLocked(const config::LoadResult& loaded, bool reopen_logs) {
  ReloadResult result;
  auto record = [&](bool ok) {
    std::lock_guard<std::mutex> lock(snapshot_mutex_);
    generation_.last_ok = ok;
    generation_.last_errors = result.errors;
    generation_.last_attempt_ms = monotonicMs();
    (ok ? generation_.reloads_ok : generation_.reloads_failed)++;
    if (ok) generation_.number++;
  };
  auto fail = [&] {
    for (const std::string& e : result.errors) spdlog::error("reload: {}", e);
    spdlog::error("reload: refused; still running the previous configuration");
    std::string first = result.errors.empty() ? "" : result.errors.front();
    events_.emit({"config_reload_failed", {{"source", config_->source}, {"error", first}}});
    record(false);
    return result;
  };
  if (draining_) {
    result.errors.push_back("the service engine is stopping");
    return fail();
  }
  // A reload also reopens the access log files (after a rotation: rename, then SIGHUP).
  for (auto& [target, log] : access_logs_) {
    std::string error;
    if (reopen_logs && !log->reopen(&error)) spdlog::error("reload: {}", error);
  }
  if (!loaded.ok()) {
    for (const config::ConfigError& e : loaded.errors) result.errors.push_back(e.toString());
    return fail();
  }
  auto next = loaded.config;
  result.notes = restartOnlyChanges(*config_, *next);
  if (bufferBlockSize(*next) > block_size_) {
    result.errors.push_back("a max_header_size this large needs larger buffers: restart to apply it");
    return fail();
  }
  // The settings that need a restart keep their running values.
  auto adjusted = std::make_shared<config::Config>(*next);
  adjusted->se = config_->se;
  adjusted->se.drain_timeout = next->se.drain_timeout;
  adjusted->store = config_->store;
  next = adjusted;

  auto snap = build(next, &result.errors);
  if (!snap) return fail();
  std::vector<std::vector<std::vector<int>>> new_fds;
  std::string error;
  if (!openListeners(*next, nullptr, &new_fds, &error)) {
    result.errors.push_back(error);
    return fail();
  }
  // Hand the snapshot to every worker and wait: from then on new connections use it.
  std::vector<std::future<void>> done;
  for (size_t w = 0; w < workers_.size(); ++w) done.push_back(workers_[w]->apply(snap, new_fds[w]));
  for (auto& f : done) f.wait();

  // Forget addresses no longer served (the workers closed their sockets) and unused logs.
  std::set<std::string> served;
  for (const auto& vs : next->virtual_services) served.insert(vs.listen.toString());
  {
    std::lock_guard<std::mutex> lock(listeners_mutex_);
    for (auto it = listen_fds_.begin(); it != listen_fds_.end();)
      it = served.count(it->first) ? std::next(it) : listen_fds_.erase(it);
  }
  std::map<std::string, std::shared_ptr<AccessLog>> logs;
  for (size_t i = 0; i < next->virtual_services.size(); ++i)
    if (snap->access_logs[i]) logs[next->virtual_services[i].access_log] = snap->access_logs[i];
  // A log no longer used is kept until the engine stops: destroying it flushes to its target,
  // which may block, and the last reference must not be dropped by a worker.
  for (auto& [target, log] : access_logs_)
    if (!logs.count(target)) retired_logs_.push_back(log);
  access_logs_ = std::move(logs);

  health_.apply(std::shared_ptr<const std::vector<lb::Pool>>(snap, &snap->pools));
  size_t before = config_->virtual_services.size();
  {
    std::lock_guard<std::mutex> lock(snapshot_mutex_);
    snapshot_ = snap;
    config_ = next;
  }
  result.ok = true;
  result.notes.insert(result.notes.begin(),
                      "loaded " + next->source + ": " + std::to_string(next->virtual_services.size()) +
                          " virtual services (was " + std::to_string(before) + "), " +
                          std::to_string(next->pools.size()) + " pools");
  for (const std::string& n : result.notes) spdlog::info("reload: {}", n);
  record(true);
  events_.emit({"config_reloaded", {{"source", next->source}}});
  return result;
}

void ServiceEngine::waitForStopSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  for (;;) {
    int sig = sigwaitinfo(&set, nullptr);
    if (sig == SIGHUP) {
      reload();
      continue;
    }
    if (sig == SIGTERM || sig == SIGINT) return;
  }
}

void blockEngineSignals() {
  // Signals are taken synchronously by the main thread (waitForStopSignal); every thread started
  // from here on inherits the blocked mask. SIGPIPE never kills us (writes use MSG_NOSIGNAL anyway).
  signal(SIGPIPE, SIG_IGN);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int ServiceEngine::runUntilSignalled() {
  waitForStopSignal();
  shutdown();
  return 0;
}

void ServiceEngine::shutdown() {
  if (workers_.empty() || draining_.exchange(true)) return;
  if (control_) control_->stop();
  auto timeout = config_->se.drain_timeout;
  spdlog::info("stopping: no new connections; draining for up to {} ms", timeout.count());
  for (auto& w : workers_) w->beginDrain();
  uint64_t deadline = monotonicMs() + static_cast<uint64_t>(timeout.count());
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  bool forced = false;
  for (;;) {
    bool all_done = true;
    for (auto& w : workers_) all_done = all_done && w->finished();
    if (all_done) break;
    if (monotonicMs() >= deadline) {
      spdlog::warn("drain timeout reached: closing the connections still open");
      forced = true;
      break;
    }
    timespec wait{0, 20 * 1000 * 1000};
    if (sigtimedwait(&set, nullptr, &wait) > 0) {
      spdlog::warn("second signal: closing the connections still open");
      forced = true;
      break;
    }
  }
  if (forced)
    for (auto& w : workers_) w->abortAll();
  for (auto& w : workers_) w->join();
  health_.stop();
  if (admin_) admin_->stop();
  spdlog::info("stopped");
}

std::shared_ptr<const proxy::Snapshot> ServiceEngine::snapshot() const {
  std::lock_guard<std::mutex> lock(snapshot_mutex_);
  return snapshot_;
}

std::string ServiceEngine::statusJson() const {
  EngineInfo info;
  info.uptime_seconds = static_cast<double>(monotonicMs() - start_ms_) / 1000.0;
  info.state = draining_ ? "draining" : "running";
  info.workers = workers_.size();
  info.pid = static_cast<long>(getpid());
  std::shared_ptr<const proxy::Snapshot> snap;
  {
    std::lock_guard<std::mutex> lock(snapshot_mutex_);
    snap = snapshot_;
    info.generation = generation_.number;
    info.reload_ok = generation_.last_ok;
    info.reload_errors = generation_.last_errors;
    info.reload_age_seconds = generation_.last_attempt_ms == 0
                                  ? -1
                                  : static_cast<double>(monotonicMs() - generation_.last_attempt_ms) / 1000.0;
  }
  info.events = events_.recent(50);
  if (store_) info.store = store_->status();
  return renderStatus(*snap, info);
}

nlohmann::json ServiceEngine::countersJson() const { return renderCounters(*snapshot()); }

namespace {
// Fills what /metrics and /state show of the store and persistence.
void storeInfo(const state::StoreBackend* store, const proxy::PersistenceShared* p, EngineInfo* info) {
  if (store != nullptr) info->store = store->status();
  if (p == nullptr) return;
  info->cache_entries = p->cache.size();
  info->cache_capacity = p->cache.capacity();
  info->cache_hits = p->cache.hits();
  info->cache_misses = p->cache.misses();
  info->pending = p->pending();
  info->pending_dropped = p->pending_dropped.load(std::memory_order_relaxed);
  info->resynced = p->resynced.load(std::memory_order_relaxed);
  info->resync_conflicts = p->resync_conflicts.load(std::memory_order_relaxed);
}

// "a%20b" -> "a b" (query parameters).
std::string percentDecode(std::string_view s) {
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() + 1 && i + 2 <= s.size() - 1 && hex(s[i + 1]) >= 0 &&
        hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i] == '+' ? ' ' : s[i];
    }
  }
  return out;
}
}  // namespace

std::string ServiceEngine::stateJson(std::string_view query) const {
  EngineInfo info;
  storeInfo(store_.get(), persistence_.get(), &info);
  std::optional<EntryView> entry;
  // ?key=<vs>:<client key>
  for (size_t start = 0; start < query.size();) {
    size_t end = query.find('&', start);
    std::string_view param = query.substr(start, end == std::string_view::npos ? query.npos : end - start);
    if (param.rfind("key=", 0) == 0 && store_) {
      EntryView view;
      view.key = percentDecode(param.substr(4));
      std::string stored = "persist:" + view.key;
      view.store = store_->inspect(stored);
      proxy::EntryCache::Entry hit;
      if (persistence_->cache.lookup(stored, monotonicMs(), &hit)) view.cached = hit.value;
      entry = std::move(view);
    }
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return renderState(*snapshot(), info, entry);
}

std::string ServiceEngine::metricsText() const {
  EngineInfo info;
  info.uptime_seconds = static_cast<double>(monotonicMs() - start_ms_) / 1000.0;
  info.workers = workers_.size();
  std::shared_ptr<const proxy::Snapshot> snap;
  {
    std::lock_guard<std::mutex> lock(snapshot_mutex_);
    snap = snapshot_;
    info.generation = generation_.number;
    info.reloads_ok = generation_.reloads_ok;
    info.reloads_failed = generation_.reloads_failed;
  }
  storeInfo(store_.get(), persistence_.get(), &info);
  return renderMetrics(*snap, info);
}

namespace {

void printErrors(const config::LoadResult& result) {
  for (const config::ConfigError& e : result.errors) std::fprintf(stderr, "%s\n", e.toString().c_str());
}

}  // namespace

void setUpLogging() {
  // Logs go to stderr (stdout is for what a command prints as its result, and access logs).
  spdlog::set_default_logger(spdlog::stderr_logger_mt("ballast"));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l %v");
}

int checkConfig(const std::string& path) {
  config::LoadResult result = config::loadFile(path);
  if (!result.ok()) {
    printErrors(result);
    return 1;
  }
  std::printf("%s: ok (%zu virtual services, %zu pools)\n", path.c_str(),
              result.config->virtual_services.size(), result.config->pools.size());
  return 0;
}

int printState(const std::string& admin, const std::string& config_path, const std::string& key) {
  std::string address = admin;
  if (address.empty() && !config_path.empty()) {
    config::LoadResult result = config::loadFile(config_path);
    if (!result.ok()) {
      printErrors(result);
      return 1;
    }
    if (!result.config->se.admin) {
      std::fprintf(stderr, "ballast se state: %s has no se.admin\n", config_path.c_str());
      return 1;
    }
    address = result.config->se.admin_text;
  }
  if (address.empty()) address = "127.0.0.1:9901";
  std::string error;
  std::optional<SocketAddress> target = SocketAddress::resolve(address, &error);
  if (!target) {
    std::fprintf(stderr, "ballast se state: %s: %s\n", address.c_str(), error.c_str());
    return 2;
  }
  int fd = ::socket(target->family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (fd < 0 || ::connect(fd, target->sockaddrPtr(), target->length()) != 0) {
    std::fprintf(stderr, "ballast se state: cannot connect to %s: %s\n", address.c_str(),
                 strerror(errno));
    if (fd >= 0) ::close(fd);
    return 1;
  }
  std::string encoded;
  for (unsigned char c : key) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == ':') {
      encoded += static_cast<char>(c);
    } else {
      char hex[4];
      std::snprintf(hex, sizeof hex, "%%%02X", c);
      encoded += hex;
    }
  }
  std::string request = "GET /state" + (key.empty() ? "" : "?key=" + encoded) +
                        " HTTP/1.1\r\nHost: " + address + "\r\nConnection: close\r\n\r\n";
  std::string response;
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
    char buf[65536];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) response.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.1 200", 0) != 0 || body == std::string::npos) {
    if (response.rfind("HTTP/1.1 ", 0) == 0) {  // an answer, not the one asked for: say which
      std::string status = response.substr(0, response.find("\r\n"));
      std::fprintf(stderr, "ballast se state: %s answered %s\n", address.c_str(), status.c_str());
    } else {
      std::fprintf(stderr, "ballast se state: no valid answer from %s\n", address.c_str());
    }
    return 1;
  }
  std::fwrite(response.data() + body + 4, 1, response.size() - body - 4, stdout);
  return 0;
}

int runServiceEngine(const std::string& path, const std::string& takeover) {
  setUpLogging();
  config::LoadResult result = config::loadFile(path);
  if (!result.ok()) {
    printErrors(result);
    return 1;
  }
  blockEngineSignals();

  ServiceEngine engine(result.config, takeover);
  std::string error;
  if (!engine.start(&error)) {
    spdlog::error("{}", error);
    return 1;
  }
  return engine.runUntilSignalled();
}

}  // namespace ballast::se
