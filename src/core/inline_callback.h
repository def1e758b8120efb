#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace ballast {

// A move-only callable of signature void(Args...) that holds callables of up to kInline bytes
// in itself (a session's completion: the session, a liveness token, an exchange id), so that a
// resolution waiting for the store allocates nothing; larger ones go to the heap.
template <typename... Args>
class InlineCallback {
 public:
  static constexpr size_t kInline = 48;

  InlineCallback() = default;
  InlineCallback(std::nullptr_t) {}  // NOLINT: implicit on purpose
  template <typename F, typename = std::enable_if_t<
                            !std::is_same_v<std::decay_t<F>, InlineCallback> &&
                            std::is_invocable_r_v<void, std::decay_t<F>&, Args...>>>
  InlineCallback(F&& f) {  // NOLINT: implicit on purpose
    using Fn = std::decay_t<F>;
    if constexpr (fitsInline<Fn>()) {
      ::new (static_cast<void*>(storage_)) Fn(std::forward<F>(f));
      ops_ = &kInlineOps<Fn>;
    } else {
      ::new (static_cast<void*>(storage_)) Fn*(new Fn(std::forward<F>(f)));
      ops_ = &kHeapOps<Fn>;
    }
  }
  InlineCallback(InlineCallback&& o) noexcept { take(o); }
  InlineCallback& operator=(InlineCallback&& o) noexcept {
    if (this != &o) {
      reset();
      take(o);
    }
    return *this;
  }
  InlineCallback(const InlineCallback&) = delete;
  InlineCallback& operator=(const InlineCallback&) = delete;
  ~InlineCallback() { reset(); }

  explicit operator bool() const { return ops_ != nullptr; }
  // Not on an empty one.
  void operator()(Args... args) const { ops_->call(storage_, std::forward<Args>(args)...); }
  void reset() {
    if (ops_ != nullptr) ops_->destroy(storage_);
    ops_ = nullptr;
  }

 private:
  struct Ops {
    void (*call)(void* self, Args&&... args);
    void (*move)(void* to, void* from);  // constructs at `to`, destroys `from`
    void (*destroy)(void* self);
  };
  template <typename Fn>
  static constexpr bool fitsInline() {
    return sizeof(Fn) <= kInline && alignof(Fn) <= alignof(std::max_align_t) &&
           std::is_nothrow_move_constructible_v<Fn>;
  }
  template <typename Fn>
  static constexpr Ops kInlineOps = {
      [](void* self, Args&&... args) { (*static_cast<Fn*>(self))(std::forward<Args>(args)...); },
      [](void* to, void* from) {
        ::new (to) Fn(std::move(*static_cast<Fn*>(from)));
        static_cast<Fn*>(from)->~Fn();
      },
      [](void* self) { static_cast<Fn*>(self)->~Fn(); }};
  template <typename Fn>
  static constexpr Ops kHeapOps = {
      [](void* self, Args&&... args) { (**static_cast<Fn**>(self))(std::forward<Args>(args)...); },
      [](void* to, void* from) { ::new (to) Fn*(*static_cast<Fn**>(from)); },
      [](void* self) { delete *static_cast<Fn**>(self); }};

  void take(InlineCallback& o) {
    if (o.ops_ == nullptr) return;
    o.ops_->move(storage_, o.storage_);
    ops_ = o.ops_;
    o.ops_ = nullptr;
  }

  alignas(std::max_align_t) mutable unsigned char storage_[kInline];
  const Ops* ops_ = nullptr;
};

}  // namespace ballast
