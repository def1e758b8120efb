#include "se/service_engine.h"

#include <signal.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "core/event_loop.h"
#include "core/socket.h"
#include "se/report.h"
#include "se/snapshot.h"

namespace ballast::se {

ServiceEngine::ServiceEngine(std::shared_ptr<const config::Config> config)
    : config_(std::move(config)), stats_(config_->se.workers) {}

ServiceEngine::~ServiceEngine() { shutdown(); }

bool ServiceEngine::start(std::string* error) {
  start_ms_ = monotonicMs();
  long fd_limit = raiseFileLimit();
  snapshot_ = buildSnapshot(config_, stats_);
  size_t workers = config_->se.workers;
  size_t block = bufferBlockSize(*config_);

  // Bind everything first: a port in use is reported before anything starts.
  std::vector<std::vector<int>> fds(workers);
  auto close_all = [&] {
    for (auto& per_worker : fds)
      for (int fd : per_worker) ::close(fd);
  };
  for (const config::VirtualService& vs : config_->virtual_services) {
    for (size_t w = 0; w < workers; ++w) {
      ListenOptions options;
      if (vs.protocol == config::Protocol::Http) options.defer_accept_seconds = 1;
      int fd = listenTcp(vs.listen, options, error);
      if (fd < 0) {
        *error = "virtual service " + vs.name + ": " + *error;
        close_all();
        return false;
      }
      fds[w].push_back(fd);
    }
  }
  if (config_->se.admin) {
    admin_ = std::make_unique<AdminServer>(AdminServer::Handlers{
        [this] { return statusJson(); }, [this] { return metricsText(); }});
    if (!admin_->start(*config_->se.admin, error)) {
      admin_.reset();
      close_all();
      return false;
    }
  }
  for (size_t w = 0; w < workers; ++w) {
    workers_.push_back(std::make_unique<Worker>(w, block));
    workers_.back()->setListeners(snapshot_, fds[w]);
  }
  for (auto& w : workers_) w->start();
  spdlog::info("ballast {} service engine: {} workers, {} virtual services, fd limit {}",
               BALLAST_VERSION, workers, config_->virtual_services.size(), fd_limit);
  for (const config::VirtualService& vs : config_->virtual_services)
    spdlog::info("virtual service {}: {} {} -> pool {}", vs.name, config::toString(vs.protocol),
                 vs.listen_text, vs.pool);
  if (config_->se.admin) spdlog::info("admin: http://{}/status", config_->se.admin_text);
  return true;
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
      spdlog::warn("SIGHUP: configuration reload is not supported yet; still running the loaded one");
      continue;
    }
    if (sig == SIGTERM || sig == SIGINT) break;
  }
  shutdown();
  return 0;
}

void ServiceEngine::shutdown() {
  if (workers_.empty() || draining_.exchange(true)) return;
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
  if (admin_) admin_->stop();
  spdlog::info("stopped");
}

std::shared_ptr<const proxy::Snapshot> ServiceEngine::snapshot() const {
  std::lock_guard<std::mutex> lock(snapshot_mutex_);
  return snapshot_;
}

static EngineInfo engineInfo(uint64_t start_ms, bool draining, size_t workers) {
  EngineInfo info;
  info.uptime_seconds = static_cast<double>(monotonicMs() - start_ms) / 1000.0;
  info.state = draining ? "draining" : "running";
  info.workers = workers;
  info.pid = static_cast<long>(getpid());
  return info;
}

std::string ServiceEngine::statusJson() const {
  return renderStatus(*snapshot(), engineInfo(start_ms_, draining_, workers_.size()));
}

std::string ServiceEngine::metricsText() const {
  return renderMetrics(*snapshot(), engineInfo(start_ms_, draining_, workers_.size()));
}

namespace {

void printErrors(const config::LoadResult& result) {
  for (const config::ConfigError& e : result.errors) std::fprintf(stderr, "%s\n", e.toString().c_str());
}

void setUpLogging() {
  // Logs go to stderr (stdout is for what a command prints as its result).
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

int runServiceEngine(const std::string& path) {
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

  ServiceEngine engine(result.config);
  std::string error;
  if (!engine.start(&error)) {
    spdlog::error("{}", error);
    return 1;
  }
  return engine.runUntilSignalled();
}

}  // namespace ballast::se
