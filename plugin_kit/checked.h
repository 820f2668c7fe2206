// Checked integer arithmetic for shape formulas. A Checked<T> carries its value and whether any
// step that produced it overflowed, so a formula reads as written and is
// tested once at the end:
//
//   const Checked<int64_t> extent = Checked(dilation) * (kernel - 1) + 1;
//   if (!extent.valid()) return fail(...);
//
// Header-only; used by libporta (the op argument checks) and by the plugins alike.
#pragma once

#include <type_traits>

namespace porta {

template <typename T>
class Checked {
  static_assert(std::is_integral_v<T>);

 public:
  constexpr Checked(T value) : value_(value) {}  // NOLINT: implicit, so formulas read naturally

  constexpr bool valid() const { return valid_; }
  // The value; meaningful only when valid().
  constexpr T value() const { return value_; }

  friend constexpr Checked operator+(Checked a, Checked b) {
    Checked r = a.joined(b);
    r.valid_ = r.valid_ && !__builtin_add_overflow(a.value_, b.value_, &r.value_);
    return r;
  }
  friend constexpr Checked operator-(Checked a, Checked b) {
    Checked r = a.joined(b);
    r.valid_ = r.valid_ && !__builtin_sub_overflow(a.value_, b.value_, &r.value_);
    return r;
  }
  friend constexpr Checked operator*(Checked a, Checked b) {
    Checked r = a.joined(b);
    r.valid_ = r.valid_ && !__builtin_mul_overflow(a.value_, b.value_, &r.value_);
    return r;
  }

 private:
  constexpr Checked joined(Checked other) const {
    Checked r(T(0));
    r.valid_ = valid_ && other.valid_;
    return r;
  }

  T value_;
  bool valid_ = true;
};

template <typename T>
Checked(T) -> Checked<T>;

}  // namespace porta
