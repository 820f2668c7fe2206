// Kernels: dtype conversion between f32, f16 and bf16 (porta_convert), one work-item per element,
// rounding to nearest even (half.h). One kernel per pair of types, so that each loop is a plain
// typed loop the CPU build vectorises.
#include "common.h"
#include "half.h"

namespace {

template <class From, class To>
PORTA_DEVICE_FUNCTION void convert(int64_t count, const void* src, void* dst) {
  const From* in = static_cast<const From*>(src);
  To* out = static_cast<To*>(dst);
  porta_ops::for_each_index(
      count, [&](int64_t i) { out[i] = porta_ops::from_float<To>(porta_ops::to_float(in[i])); });
}

}  // namespace

// Named convert_<from>_<to>; the same type both ways is a copy, done by the host.
PORTA_KERNEL(convert_f32_f16, int64_t count, const void* src, void* dst) {
  convert<float, porta_ops::f16>(count, src, dst);
}
PORTA_KERNEL(convert_f32_bf16, int64_t count, const void* src, void* dst) {
  convert<float, porta_ops::bf16>(count, src, dst);
}
PORTA_KERNEL(convert_f16_f32, int64_t count, const void* src, void* dst) {
  convert<porta_ops::f16, float>(count, src, dst);
}
PORTA_KERNEL(convert_bf16_f32, int64_t count, const void* src, void* dst) {
  convert<porta_ops::bf16, float>(count, src, dst);
}
// Through fp32, which holds every f16 and bf16 value exactly: one rounding, as a direct
// conversion would do.
PORTA_KERNEL(convert_f16_bf16, int64_t count, const void* src, void* dst) {
  convert<porta_ops::f16, porta_ops::bf16>(count, src, dst);
}
PORTA_KERNEL(convert_bf16_f16, int64_t count, const void* src, void* dst) {
  convert<porta_ops::bf16, porta_ops::f16>(count, src, dst);
}
