// porta_convert against a reference conversion written from the header's text: exact results,
// bit for bit, for every pair of f32, f16 and bf16. No tolerance: a conversion has one correct
// answer. The reference rounds in float64 (nearbyint, ties to even under the default rounding
// mode) on the value's quantum, so it shares no bit tricks with the kernels.
//
// Inputs: every one of the 65536 encodings of f16 and of bf16 (each way); for f32 sources,
// specials (zeros, infinities, NaNs with payloads and both signs, the largest finite values,
// the overflow thresholds, fp32 subnormals), exact ties and near-ties at every f16 and bf16
// exponent, f16 subnormals, and random bit patterns over the whole range.
// A NaN must come out a NaN of the same sign (narrowing: quiet); its payload is not specified.
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

#include "bad_enums.h"
#include "ops_test.h"

using namespace ops_test;

namespace {

uint32_t bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}
float from_bits(uint32_t u) {
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

// a >= 0 rounded to a binary format with `precision` significand bits and minimum normal
// exponent emin (subnormals below it), to nearest even; infinity past max_finite.
double round_to_format(double a, int precision, int emin, double max_finite) {
  if (a == 0.0 || std::isinf(a)) return a;
  int ex;
  std::frexp(a, &ex);  // a = f * 2^ex, f in [0.5, 1)
  const int e = std::max(ex - 1, emin);
  const double quantum = std::ldexp(1.0, e - (precision - 1));
  const double rounded = std::nearbyint(a / quantum) * quantum;
  return rounded > max_finite ? std::numeric_limits<double>::infinity() : rounded;
}

// The reference's value of each encoding.
double f16_value(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const double sign = h & 0x8000 ? -1.0 : 1.0;
  if (e == 31) return m ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  if (e == 0) return sign * std::ldexp(m, -24);
  return sign * std::ldexp(1024 + m, e - 25);
}
double bf16_value(uint16_t b) { return from_bits(uint32_t(b) << 16); }

// A finite or infinite value that f16 holds exactly, encoded.
uint16_t f16_encode(double v) {
  const uint16_t sign = std::signbit(v) ? 0x8000 : 0;
  const double a = std::fabs(v);
  if (std::isinf(a)) return sign | 0x7C00;
  if (a < 0x1p-14) return sign | static_cast<uint16_t>(a * 0x1p24);
  int ex;
  const double f = std::frexp(a, &ex);  // a = f * 2^ex
  const int e = ex - 1;
  return sign | static_cast<uint16_t>((e + 15) << 10) |
         static_cast<uint16_t>((f * 2.0 - 1.0) * 1024.0);
}

// Expected 16-bit results of narrowing v (never NaN here).
uint16_t ref_f16(double v) {
  const double r = round_to_format(std::fabs(v), 11, -14, 65504.0);
  return f16_encode(std::copysign(r, v));
}
uint16_t ref_bf16(double v) {
  const double max = std::ldexp(255.0, 120);  // (2 - 2^-7) * 2^127
  const double r = round_to_format(std::fabs(v), 8, -126, max);
  return static_cast<uint16_t>(bits(static_cast<float>(std::copysign(r, v))) >> 16);
}

const char* name_of(porta_dtype_t t) {
  return t == PORTA_DTYPE_F32 ? "f32" : t == PORTA_DTYPE_F16 ? "f16" : "bf16";
}

// Encodings as 32-bit words (f32) or 16-bit ones, for the checks.
bool is_nan(porta_dtype_t t, uint32_t v) {
  if (t == PORTA_DTYPE_F32) return (v & 0x7FFFFFFFu) > 0x7F800000u;
  if (t == PORTA_DTYPE_F16) return (v & 0x7FFFu) > 0x7C00u;
  return (v & 0x7FFFu) > 0x7F80u;
}
bool is_quiet(porta_dtype_t t, uint32_t v) {
  return t == PORTA_DTYPE_F32 ? (v & 0x00400000u) : t == PORTA_DTYPE_F16 ? (v & 0x0200u)
                                                                          : (v & 0x0040u);
}
uint32_t sign_of(porta_dtype_t t, uint32_t v) { return t == PORTA_DTYPE_F32 ? v >> 31 : v >> 15; }

double value_of(porta_dtype_t t, uint32_t v) {
  if (t == PORTA_DTYPE_F32) return from_bits(v);
  return t == PORTA_DTYPE_F16 ? f16_value(uint16_t(v)) : bf16_value(uint16_t(v));
}

// The expected encoding of source word v converted to `to` (not for NaNs).
uint32_t expected(porta_dtype_t from, uint32_t v, porta_dtype_t to) {
  if (from == to) return v;
  const double x = value_of(from, v);
  if (to == PORTA_DTYPE_F32) return bits(static_cast<float>(x));  // exact: f32 holds all of them
  return to == PORTA_DTYPE_F16 ? ref_f16(x) : ref_bf16(x);
}

// Uploads the source words, converts, and checks every element; also that src is unchanged and
// that nothing was written past dst.
void check_conversion(const Env& env, porta_dtype_t from, const std::vector<uint32_t>& source,
                      porta_dtype_t to) {
  INFO("porta_convert " << name_of(from) << " -> " << name_of(to) << ", " << source.size()
                        << " elements");
  const int64_t count = static_cast<int64_t>(source.size());
  DeviceArray<float> src32(env, from == PORTA_DTYPE_F32 ? source.size() : 0);
  DeviceArray<uint16_t> src16(env, from == PORTA_DTYPE_F32 ? 0 : source.size());
  DeviceArray<float> dst32(env, to == PORTA_DTYPE_F32 ? source.size() : 0);
  DeviceArray<uint16_t> dst16(env, to == PORTA_DTYPE_F32 ? 0 : source.size());
  if (from == PORTA_DTYPE_F32) {
    std::vector<float> values(source.size());
    for (size_t i = 0; i < source.size(); ++i) values[i] = from_bits(source[i]);
    src32.upload(values);
  } else {
    src16.upload(std::vector<uint16_t>(source.begin(), source.end()));
  }
  const void* src = from == PORTA_DTYPE_F32 ? static_cast<const void*>(src32.get()) : src16.get();
  void* dst = to == PORTA_DTYPE_F32 ? static_cast<void*>(dst32.get()) : dst16.get();
  PT_CHECK_OK(porta_convert(env.stream(), count, from, src, to, dst));
  env.sync();
  std::vector<uint32_t> got(source.size());
  if (to == PORTA_DTYPE_F32) {
    const std::vector<float> out = dst32.download();
    for (size_t i = 0; i < out.size(); ++i) got[i] = bits(out[i]);
    dst32.check_guard("dst");
  } else {
    const std::vector<uint16_t> out = dst16.download();
    got.assign(out.begin(), out.end());
    dst16.check_guard("dst");
  }
  if (from == PORTA_DTYPE_F32) {
    src32.check_unchanged("src");
  } else {
    src16.check_unchanged("src");
  }
  size_t failures = 0;
  std::ostringstream first;
  for (size_t i = 0; i < source.size(); ++i) {
    const uint32_t v = source[i];
    bool ok;
    if (is_nan(from, v)) {
      ok = is_nan(to, got[i]) && sign_of(to, got[i]) == sign_of(from, v) &&
           (from == to ? got[i] == v : to == PORTA_DTYPE_F32 || is_quiet(to, got[i]));
    } else {
      ok = got[i] == expected(from, v, to);
    }
    if (!ok && failures++ < 8) {
      first << std::hex << "\n  [" << std::dec << i << "] source 0x" << std::hex << v << " ("
            << value_of(from, v) << ") -> 0x" << got[i];
      if (!is_nan(from, v)) first << ", expected 0x" << expected(from, v, to);
    }
  }
  INFO(failures << " of " << source.size() << " elements wrong:" << first.str());
  CHECK(failures == 0);
}

// Every 16-bit encoding.
std::vector<uint32_t> all_16_bit() {
  std::vector<uint32_t> out(65536);
  for (uint32_t i = 0; i < 65536; ++i) out[i] = i;
  return out;
}

// f32 inputs that exercise narrowing: specials, thresholds, ties and near-ties, subnormals of
// both 16-bit formats, and random patterns.
std::vector<uint32_t> f32_cases(uint64_t seed) {
  std::vector<uint32_t> out;
  const float specials[] = {0.0f,       -0.0f,        INFINITY,         -INFINITY,
                            65504.0f,   65519.996f,   65520.0f,         -65520.0f,
                            65536.0f,   1e10f,        3.4028235e38f,    -3.4028235e38f,
                            0x1p-14f,   0x1p-24f,     0x1p-25f,         0x1.8p-24f,
                            0x1.000002p-25f, 0x1p-26f, 0x1.4p-24f,      0x1.cp-24f,
                            0x1p-126f,  0x1p-149f,    0x1.fffffcp-127f, 0x1p-133f,
                            1.0f,       -1.0f,        0x1.002p0f,       0x1.006p0f,
                            0x1.01p0f,  0x1.03p0f,    0x1.fep127f,      0x1.ffp127f};
  for (float s : specials) out.push_back(bits(s));
  // NaNs: quiet and signalling, both signs, payloads that only the low bits carry.
  for (uint32_t nan : {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF800001u, 0x7FBFFFFFu,
                       0x7FC0DEADu, 0x7F802000u, 0xFFA00000u}) {
    out.push_back(nan);
  }
  // Around every f16 rounding boundary and every bf16 one, at each exponent: the exact tie
  // (halfway), one ulp of fp32 either side, with the kept last bit odd and even.
  for (uint32_t e = 127 - 24; e <= 127 + 16; ++e) {
    for (uint32_t kept : {0x000u, 0x001u, 0x2AAu, 0x3FEu, 0x3FFu}) {
      const uint32_t tie = e << 23 | kept << 13 | 0x1000u;
      for (uint32_t v : {tie - 1, tie, tie + 1}) {
        out.push_back(v);
        out.push_back(v | 0x80000000u);
      }
    }
  }
  for (uint32_t e = 0; e <= 254; ++e) {
    for (uint32_t kept : {0x00u, 0x01u, 0x55u, 0x7Eu, 0x7Fu}) {
      const uint32_t tie = e << 23 | kept << 16 | 0x8000u;
      for (uint32_t v : {tie - 1, tie, tie + 1}) {
        out.push_back(v);
        out.push_back(v | 0x80000000u);
      }
    }
  }
  Rng rng(seed);
  for (int i = 0; i < (1 << 18) + 7; ++i) out.push_back(static_cast<uint32_t>(rng.next()));
  // Random values within f16's range, where its rounding is exercised most.
  for (int i = 0; i < (1 << 16); ++i) {
    const uint32_t r = static_cast<uint32_t>(rng.next());
    const uint32_t e = 127 - 26 + (r >> 24) % 43;
    out.push_back((r & 0x80000000u) | e << 23 | (r & 0x7FFFFFu));
  }
  return out;
}

constexpr porta_dtype_t kF32 = PORTA_DTYPE_F32, kF16 = PORTA_DTYPE_F16, kBF16 = PORTA_DTYPE_BF16;

}  // namespace

TEST_CASE("convert: f32 to f16 and bf16, rounding to nearest even, specials kept", "[convert]") {
  Env env;
  const std::vector<uint32_t> cases = f32_cases(seed_for(0));
  check_conversion(env, kF32, cases, kF16);
  check_conversion(env, kF32, cases, kBF16);
  check_conversion(env, kF32, cases, kF32);  // a copy
}

TEST_CASE("convert: every f16 and bf16 encoding to each dtype", "[convert]") {
  Env env;
  const std::vector<uint32_t> all = all_16_bit();
  for (porta_dtype_t from : {kF16, kBF16}) {
    for (porta_dtype_t to : {kF32, kF16, kBF16}) check_conversion(env, from, all, to);
  }
}

TEST_CASE("convert: odd counts, one element, and more work-groups than a grid row holds",
          "[convert]") {
  Env env;
  Rng rng(seed_for(1));
  for (size_t count : {size_t{1}, size_t{3}, size_t{255}, size_t{257}, size_t{65535 * 256 + 300}}) {
    std::vector<uint32_t> words(count);
    for (uint32_t& w : words) w = static_cast<uint32_t>(rng.next());
    check_conversion(env, kF32, words, kBF16);
    for (uint32_t& w : words) w &= 0xFFFFu;
    check_conversion(env, kF16, words, kF32);
  }
}

TEST_CASE("convert: in place between the 16-bit dtypes", "[convert]") {
  Env env;
  const std::vector<uint32_t> all = all_16_bit();
  DeviceArray<uint16_t> data(env, all.size());
  data.upload(std::vector<uint16_t>(all.begin(), all.end()));
  PT_CHECK_OK(porta_convert(env.stream(), int64_t(all.size()), kF16, data.get(), kBF16, data.get()));
  env.sync();
  const std::vector<uint16_t> got = data.download();
  size_t wrong = 0;
  for (uint32_t v : all) {
    const bool ok = is_nan(kF16, v) ? is_nan(kBF16, got[v]) && sign_of(kBF16, got[v]) == v >> 15
                                    : got[v] == expected(kF16, v, kBF16);
    wrong += !ok;
  }
  CHECK(wrong == 0);
  data.check_guard("data");
}

TEST_CASE("errors: convert", "[errors][convert]") {
  Env env;
  const int64_t count = 64;
  Floats f32(env, count, 0, 0), shared(env, 2 * count, 0, 0);
  DeviceArray<uint16_t> h16(env, count, 0, 0), small16(env, count - 1, 0, 0);
  Rng rng(seed_for(0));
  f32.upload(normal(rng, count));
  const Untouched untouched(env, {{"f32", &f32}, {"shared", &shared}});
  const auto convert = [&](int64_t n, porta_dtype_t from, const void* src, porta_dtype_t to,
                           void* dst) { return porta_convert(env.stream(), n, from, src, to, dst); };
  constexpr porta_status_t kInvalid = PORTA_ERROR_INVALID_ARGUMENT;
  PT_CHECK_REJECTS(untouched, kInvalid, "porta_convert count",
                   convert(0, kF32, f32.get(), kF16, h16.get()));
  PT_CHECK_REJECTS(untouched, kInvalid, "porta_convert count",
                   convert(-1, kF32, f32.get(), kF16, h16.get()));
  PT_CHECK_REJECTS(untouched, kInvalid, "porta_convert src",
                   convert(count, kF32, nullptr, kF16, h16.get()));
  PT_CHECK_REJECTS(untouched, kInvalid, "porta_convert dst",
                   convert(count, kF32, f32.get(), kF16, nullptr));
  // dst one element short for 2-byte elements: 63 * 2 bytes.
  PT_CHECK_REJECTS(untouched, kInvalid, "porta_convert dst 64 126",
                   convert(count, kF32, f32.get(), kBF16, small16.get()));
  PT_CHECK_REJECTS(untouched, kInvalid, "porta_convert src 64 126",
                   convert(count, kF16, small16.get(), kF32, f32.get()));
  // Different sizes may not share memory, not even from the same start.
  float* base = shared.get();
  PT_CHECK_REJECTS(untouched, kInvalid, "porta_convert dst src",
                   convert(count, kF32, base, kBF16, base));
  PT_CHECK_REJECTS(untouched, kInvalid, "porta_convert dst src",
                   convert(count, kBF16, base, kF32, base + 1));
  std::vector<float> host(count, 1.0f);
  PT_CHECK_REJECTS(untouched, kInvalid, "porta_convert src",
                   convert(count, kF32, host.data(), kF16, h16.get()));
  // Unknown dtypes, formed in C.
  PT_CHECK_REJECTS(untouched, kInvalid, "porta_convert src_dtype 3",
                   porta_test_convert_bad_dtype(env.stream(), count, 3, f32.get(), 1, h16.get()));
  PT_CHECK_REJECTS(untouched, kInvalid, "porta_convert dst_dtype 7",
                   porta_test_convert_bad_dtype(env.stream(), count, 0, f32.get(), 7, h16.get()));
}
