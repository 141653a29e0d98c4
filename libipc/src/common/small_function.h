// SmallFunction: a move-only `void()` callable that keeps a small functor inside itself.
//
// std::function (libstdc++) stores a functor in place only when it is trivially copyable and at
// most 16 bytes, so a lambda holding two shared_ptrs costs a heap allocation per event. The
// page's event queues hold one such lambda per delivered message; this keeps any functor of up
// to `Inline` bytes in place (and a larger one on the heap), and, being move-only, also takes
// functors that cannot be copied.
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace swipc {

template <size_t Inline = 48>
class SmallFunction {
  static_assert(Inline >= sizeof(void*), "a functor kept on the heap is held by a pointer in place");

 public:
  SmallFunction() = default;

  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, SmallFunction> &&
                                                    std::is_invocable_v<std::decay_t<F>&>>>
  SmallFunction(F&& f) {  // NOLINT(google-explicit-constructor): takes a lambda where std::function did
    using T = std::decay_t<F>;
    if constexpr (fitsInPlace<T>()) {
      ::new (static_cast<void*>(buf_)) T(std::forward<F>(f));
      ops_ = &IN_PLACE<T>;
    } else {
      *reinterpret_cast<T**>(buf_) = new T(std::forward<F>(f));
      ops_ = &ON_HEAP<T>;
    }
  }

  SmallFunction(SmallFunction&& o) noexcept { take(o); }
  SmallFunction& operator=(SmallFunction&& o) noexcept {
    if (this != &o) {
      reset();
      take(o);
    }
    return *this;
  }
  SmallFunction(const SmallFunction&) = delete;
  SmallFunction& operator=(const SmallFunction&) = delete;
  ~SmallFunction() { reset(); }

  explicit operator bool() const { return ops_ != nullptr; }
  /// Runs the functor; there must be one (unlike std::function, an empty one is not checked).
  void operator()() { ops_->call(buf_); }

  /// Whether a functor of type T is kept in place (no allocation).
  template <typename T>
  static constexpr bool fitsInPlace() {
    return sizeof(T) <= Inline && alignof(T) <= alignof(std::max_align_t) && std::is_nothrow_move_constructible_v<T>;
  }

 private:
  struct Ops {
    void (*call)(void* self);
    void (*move)(void* to, void* from);  // leaves `from` without a functor
    void (*destroy)(void* self);
  };
  template <typename T>
  static constexpr Ops IN_PLACE{
      [](void* s) { (*static_cast<T*>(s))(); },
      [](void* to, void* from) {
        ::new (to) T(std::move(*static_cast<T*>(from)));
        static_cast<T*>(from)->~T();
      },
      [](void* s) { static_cast<T*>(s)->~T(); }};
  template <typename T>
  static constexpr Ops ON_HEAP{[](void* s) { (**static_cast<T**>(s))(); },
                               [](void* to, void* from) { *static_cast<T**>(to) = *static_cast<T**>(from); },
                               [](void* s) { delete *static_cast<T**>(s); }};

  void take(SmallFunction& o) noexcept {
    if (!o.ops_) return;
    o.ops_->move(buf_, o.buf_);
    ops_ = std::exchange(o.ops_, nullptr);
  }
  void reset() {
    if (ops_) std::exchange(ops_, nullptr)->destroy(buf_);
  }

  alignas(std::max_align_t) unsigned char buf_[Inline];
  const Ops* ops_ = nullptr;
};

}  // namespace swipc
