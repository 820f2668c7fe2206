// 16-bit floating-point storage types, bf16 and f16 (IEEE binary16), for the host, the CPU
// kernels and the GPU kernels alike: plain structs of their bits, converted to and from fp32 by
// integer arithmetic only. No vendor type (__half, __nv_bfloat16, _Float16) is used, so that the
// same source gives the same bits on every target, whatever the compiler's flags (flush to zero,
// fast math); the conversions are written without branches so that CPU loops over them
// vectorise. Math is done in fp32: these types are only loaded, stored and converted.
//
// Conversions to 16 bits round to nearest, ties to even; values beyond the largest finite one
// become infinity, infinities stay infinities, and a NaN stays a NaN of the same sign with the
// top bits of its payload, made quiet. f16 keeps subnormals (down to 2^-24); bf16 has fp32's
// exponent range, and its subnormals are fp32's.
#pragma once

#include <porta/porta_kernel.h>
#include <stdint.h>

namespace porta_ops {

struct bf16 {
  uint16_t bits;
};
struct f16 {
  uint16_t bits;
};
static_assert(sizeof(bf16) == 2 && sizeof(f16) == 2, "16-bit storage types");

namespace half_detail {
PORTA_DEVICE_FUNCTION uint32_t bits_of(float v) {
  uint32_t u;
  __builtin_memcpy(&u, &v, sizeof u);
  return u;
}
PORTA_DEVICE_FUNCTION float float_of(uint32_t u) {
  float v;
  __builtin_memcpy(&v, &u, sizeof v);
  return v;
}
// c ? a : b on bits, without a branch.
PORTA_DEVICE_FUNCTION uint32_t select(bool c, uint32_t a, uint32_t b) {
  const uint32_t mask = 0u - uint32_t(c);
  return (a & mask) | (b & ~mask);
}
}  // namespace half_detail

PORTA_DEVICE_FUNCTION float to_float(float v) { return v; }

PORTA_DEVICE_FUNCTION float to_float(bf16 v) { return half_detail::float_of(uint32_t(v.bits) << 16); }

// The f16 exponent is rebased by 112 (127 - 15); the maximum exponent (infinity, NaN) maps to
// fp32's; subnormals (exponent 0) are their significand times 2^-24, which fp32 holds exactly.
PORTA_DEVICE_FUNCTION float to_float(f16 v) {
  using namespace half_detail;
  const uint32_t sign = uint32_t(v.bits & 0x8000u) << 16;
  const uint32_t magnitude = v.bits & 0x7FFFu;
  const uint32_t normal = (magnitude << 13) + (112u << 23);
  const uint32_t special = normal + (112u << 23);  // exponent 31 -> 255
  // An integer below 2^10 converts exactly; times 2^-24 is exact too.
  const uint32_t subnormal = bits_of(float(int32_t(magnitude)) * 0x1p-24f);
  const uint32_t out =
      select(magnitude < 0x0400u, subnormal, select(magnitude >= 0x7C00u, special, normal));
  return float_of(sign | out);
}

PORTA_DEVICE_FUNCTION bf16 to_bf16(float v) {
  using namespace half_detail;
  const uint32_t u = bits_of(v);
  // Adding 0x7FFF plus the lowest kept bit rounds to nearest even; a carry out of the
  // significand bumps the exponent, up to infinity, as it should.
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return bf16{uint16_t(select(nan, (u >> 16) | 0x0040u, rounded))};
}

// Normal results round the fp32 significand's low 13 bits away (as to_bf16 does 16); results
// below 2^-14 (f16 subnormals) are rounded by an fp32 addition: x + 0.5 has its ulp at 2^-24,
// so the addition rounds x to a multiple of 2^-24, to nearest even, under the default rounding
// mode, and the low bits of the sum are the subnormal's significand.
PORTA_DEVICE_FUNCTION f16 to_f16(float v) {
  using namespace half_detail;
  const uint32_t u = bits_of(v);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7FFFFFFFu;
  const uint32_t normal = (a - (112u << 23) + 0x0FFFu + ((a >> 13) & 1u)) >> 13;
  const uint32_t subnormal = bits_of(float_of(a) + 0.5f) - bits_of(0.5f);
  const uint32_t nan = 0x7E00u | ((a >> 13) & 0x03FFu);
  // 65520 = 2^16 - 2^4 rounds up to 2^16 (infinity) and anything above it too; the normal
  // formula would give that for anything below 2^16 but not beyond.
  uint32_t out = select(a < (113u << 23), subnormal, normal);
  out = select(a >= 0x477FF000u, 0x7C00u, out);
  out = select(a > 0x7F800000u, nan, out);
  return f16{uint16_t(sign | out)};
}

// Converts to the storage type T (float, bf16 or f16).
template <class T>
PORTA_DEVICE_FUNCTION T from_float(float v);
template <>
PORTA_DEVICE_FUNCTION float from_float<float>(float v) {
  return v;
}
template <>
PORTA_DEVICE_FUNCTION bf16 from_float<bf16>(float v) {
  return to_bf16(v);
}
template <>
PORTA_DEVICE_FUNCTION f16 from_float<f16>(float v) {
  return to_f16(v);
}

}  // namespace porta_ops
