#include "se/worker.h"

#include <spdlog/spdlog.h>

namespace ballast::se {

namespace {
constexpr uint64_t kDrainCheckMs = 20;
constexpr size_t kMaxFreeBuffers = 256;
}  // namespace

Worker::Worker(size_t index, size_t buffer_size, EventSink* events)
    : index_(index),
      buffers_(buffer_size, kMaxFreeBuffers),
      upstreams_(loop_, index),
      ctx_(loop_, buffers_, upstreams_, index),
      drain_check_(loop_, this) {
  ctx_.events = events;
}

Worker::~Worker() {
  join();
  listeners_.clear();
}

std::future<void> Worker::apply(std::shared_ptr<const proxy::Snapshot> snapshot,
                                std::vector<std::vector<int>> new_fds) {
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> future = done->get_future();
  if (!thread_.joinable()) {
    applyNow(snapshot, new_fds);
    done->set_value();
    return future;
  }
  loop_.post([this, snapshot = std::move(snapshot), new_fds = std::move(new_fds), done] {
    if (!ctx_.draining) applyNow(snapshot, new_fds);
    done->set_value();
  });
  return future;
}

void Worker::applyNow(const std::shared_ptr<const proxy::Snapshot>& snapshot,
                      const std::vector<std::vector<int>>& new_fds) {
  const auto& services = snapshot->config->virtual_services;
  std::vector<std::unique_ptr<proxy::Listener>> kept;
  for (size_t i = 0; i < services.size(); ++i) {
    auto service = std::make_shared<proxy::Service>(snapshot, i, index_);
    // Listeners of an address still served stay open: a reload never closes them.
    for (auto& l : listeners_) {
      if (l && l->service().config.listen == services[i].listen) {
        l->setService(service);
        kept.push_back(std::move(l));
      }
    }
    if (i < new_fds.size())
      for (int fd : new_fds[i]) kept.push_back(std::make_unique<proxy::Listener>(ctx_, service, fd));
  }
  // Virtual services no longer served: their listeners close, their connections drain.
  bool retired = false;
  for (auto& l : listeners_) {
    if (!l) continue;
    l->retire();
    retired = true;
  }
  listeners_ = std::move(kept);
  if (retired)
    for (proxy::Session* s = ctx_.sessions; s != nullptr;) {
      proxy::Session* next = s->next();
      if (s->slot().retired) s->drain();
      s = next;
    }
}

void Worker::attachStore(state::StoreBackend& backend, proxy::PersistenceShared& shared) {
  store_ = backend.forWorker(loop_, index_);
  persistence_ = std::make_unique<proxy::PersistenceResolver>(loop_, *store_, shared);
  ctx_.persistence = persistence_.get();
}

void Worker::start() {
  thread_ = std::thread([this] {
    try {
      loop_.run();
    } catch (const std::exception& e) {
      spdlog::critical("worker {}: {}", index_, e.what());
    }
    // Whatever is left (abort, or a loop error) goes now, on this thread.
    for (proxy::Session* s = ctx_.sessions; s != nullptr;) {
      proxy::Session* next = s->next();
      s->abort();
      s = next;
    }
    listeners_.clear();
    upstreams_.closeIdle();
    loop_.collectGarbage();
    finished_ = true;
  });
}

void Worker::beginDrain() {
  loop_.post([this] {
    ctx_.draining = true;
    for (auto& l : listeners_) l->close();
    for (proxy::Session* s = ctx_.sessions; s != nullptr;) {
      proxy::Session* next = s->next();
      s->drain();
      s = next;
    }
    upstreams_.closeIdle();
    drain_check_.armAfter(kDrainCheckMs);
  });
}

void Worker::onTimer(int) {
  // Sessions closed in this iteration are counted until the end of it; idle upstream
  // connections released by the last exchanges go too.
  upstreams_.closeIdle();
  if (ctx_.session_count == 0) {
    loop_.stop();
    return;
  }
  drain_check_.armAfter(kDrainCheckMs);
}

void Worker::abortAll() {
  loop_.post([this] { loop_.stop(); });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

}  // namespace ballast::se
