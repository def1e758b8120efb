#include "se/worker.h"

#include <spdlog/spdlog.h>

namespace ballast::se {

namespace {
constexpr uint64_t kDrainCheckMs = 20;
constexpr size_t kMaxFreeBuffers = 256;
}  // namespace

Worker::Worker(size_t index, size_t buffer_size)
    : index_(index),
      buffers_(buffer_size, kMaxFreeBuffers),
      upstreams_(loop_, index),
      ctx_(loop_, buffers_, upstreams_, index),
      drain_check_(loop_, this) {}

Worker::~Worker() {
  join();
  listeners_.clear();
}

void Worker::setListeners(const std::shared_ptr<const proxy::Snapshot>& snapshot,
                          const std::vector<int>& listen_fds) {
  for (size_t i = 0; i < listen_fds.size(); ++i) {
    auto service = std::make_shared<proxy::Service>(snapshot, i, index_);
    listeners_.push_back(std::make_unique<proxy::Listener>(ctx_, std::move(service), listen_fds[i]));
  }
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
