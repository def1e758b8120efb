#include "se/service_engine.h"

#include <signal.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
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
  block_size_ = bufferBlockSize(*config_);

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
  if (config_->se.admin) {
    admin_ = std::make_unique<AdminServer>(AdminServer::Handlers{
        [this] { return statusJson(); }, [this] { return metricsText(); },
        [this] {
          ReloadResult r = reload();
          nlohmann::json j{{"ok", r.ok}, {"errors", r.errors}, {"notes", r.notes}};
          return std::make_pair(r.ok, j.dump(2) + "\n");
        }});
    if (!admin_->start(*config_->se.admin, error)) {
      admin_.reset();
      closeAll(fds);
      if (takeover_conn >= 0) ::close(takeover_conn);
      return false;
    }
  }
  for (size_t w = 0; w < workers; ++w) {
    workers_.push_back(std::make_unique<Worker>(w, block_size_, &events_));
    workers_.back()->apply(snapshot_, fds[w]);
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
    if (!log->reopen(&error)) spdlog::error("reload: {}", error);
  }
  config::LoadResult loaded = config::loadFile(config_->source);
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

int ServiceEngine::runUntilSignalled() {
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
    if (sig == SIGTERM || sig == SIGINT) break;
  }
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
  return renderStatus(*snap, info);
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
  return renderMetrics(*snap, info);
}

namespace {

void printErrors(const config::LoadResult& result) {
  for (const config::ConfigError& e : result.errors) std::fprintf(stderr, "%s\n", e.toString().c_str());
}

void setUpLogging() {
  // Logs go to stderr (stdout is for what a command prints as its result, and access logs).
  spdlog::set_default_logger(spdlog::stderr_logger_mt("ballast"));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l %v");
}

}  // namespace

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

int runServiceEngine(const std::string& path, const std::string& takeover) {
  setUpLogging();
  config::LoadResult result = config::loadFile(path);
  if (!result.ok()) {
    printErrors(result);
    return 1;
  }
  // Signals are taken synchronously by the main thread; every thread started from here on
  // inherits the blocked mask. SIGPIPE never kills us (writes use MSG_NOSIGNAL anyway).
  signal(SIGPIPE, SIG_IGN);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  ServiceEngine engine(result.config, takeover);
  std::string error;
  if (!engine.start(&error)) {
    spdlog::error("{}", error);
    return 1;
  }
  return engine.runUntilSignalled();
}

}  // namespace ballast::se
