// Helpers shared by the operator tests (porta-op-tests): the device and stream of a test, seeded
// random data, device arrays with poisoned contents and guard zones, tolerance checks against the
// float64 reference, and rejected-call checks. The status assertions and RAII owners come from
// the conformance suite's common.h.
//
// Every test follows one pattern:
//   - inputs are fresh random normal values (never zero) from a seed that is fixed per test and
//     case, and printed on failure (PORTA_OPS_TEST_SEED=<n> changes every seed, for fresh draws);
//   - every output element is poisoned with a NaN before the call, so an element the op skips
//     fails; every buffer carries kGuard poisoned elements past its end, which must survive the
//     call bit for bit, so an op that writes past its output fails; inputs must come back
//     unchanged;
//   - results are compared with the float64 reference per element:
//       |got - ref| <= tol * scale + kAbsFloor
//     where scale is what fp32 rounding error is proportional to for that element (for a sum,
//     the sum of the magnitudes of its terms) and tol is stated and justified next to each op.
#pragma once

#include <porta/porta.h>
#include <porta/porta_ops.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../conformance/common.h"
#include "reference.h"

namespace ops_test {

// The unit roundoff of fp32 (2^-24), and one ulp at 1 (2^-23).
constexpr double kU = 0x1p-24;
constexpr double kUlp = 0x1p-23;
// An absolute floor on every tolerance: 2^-120, a little above the subnormal range of fp32
// (below 2^-126), so that a device flushing subnormal results to zero is not a failure, while any
// error that matters for values of order 1e-30 or more is still seen.
constexpr double kAbsFloor = 0x1p-120;
// Poisoned elements after the end of every device array of a correctness test.
constexpr size_t kGuard = 256;

// ---- the device and stream of a test
// -------------------------------------------------------------

// The first device of the selected backend and a stream of its own, for one test.
class Env {
 public:
  Env();
  porta_device_t device() const { return device_; }
  porta_stream_t stream() const { return stream_.get(); }
  // Waits for the stream (REQUIREs success: an asynchronous failure of an op shows here).
  void sync() const;

 private:
  porta_device_t device_;
  porta_test::Stream stream_;
};

// ---- seeds and random data ---------------------------------------------------------------------

// A seed fixed for (the running test's name, case): reproducible run to run; printed with every
// failure through INFO by the callers. PORTA_OPS_TEST_SEED, if set, is mixed into every seed.
uint64_t seed_for(uint64_t case_index);

// splitmix64 and Box-Muller: the same numbers on every platform and standard library.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next();
  double uniform();  // in (0, 1)
  double normal();
  int64_t integer(int64_t lo, int64_t hi);  // in [lo, hi]

 private:
  uint64_t state_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

// n values of N(mean, stddev^2) rounded to fp32, none of them zero.
std::vector<float> normal(Rng& rng, size_t n, double stddev = 1.0, double mean = 0.0);
// Standard normal values with |v| >= margin (for the kinks of ReLU).
std::vector<float> normal_away_from_zero(Rng& rng, size_t n, double margin);
// Standard normal values, all distinct and at least `gap` apart (for max-pooling without ties).
std::vector<float> normal_distinct(Rng& rng, size_t n, double gap);

std::vector<double> widen(const std::vector<float>& values);
std::vector<double> abs_of(const std::vector<double>& values);

// Values rounded to what f16 / bf16 hold exactly (so products of them are exact in fp32), and
// their 16-bit encodings. Callers keep f16 values in the normal range (see normal_f16).
std::vector<float> round_to_f16(const std::vector<float>& values);
std::vector<float> round_to_bf16(const std::vector<float>& values);
std::vector<uint16_t> encode(porta_dtype_t dtype, const std::vector<float>& values);

// ---- device arrays -----------------------------------------------------------------------------

// The NaN that poisons outputs and guards (a quiet NaN with a recognisable payload).
float poison_float();
template <class T>
T poison_value();

// count elements of T in device memory, after `lead` and before `guard` more; everything starts
// poisoned. The lead zone catches writes before the start; a lead that is not a multiple of 64
// elements also misaligns the data (see kMisaligned). The host keeps a mirror of what it last
// wrote, so the test can check that nothing an op must not touch (inputs, guards, gaps) changed.
template <class T>
class DeviceArray {
 public:
  DeviceArray(const Env& env, size_t count, size_t guard = kGuard, size_t lead = kGuard);
  ~DeviceArray();
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() const { return ptr_ + lead_; }
  size_t size() const { return count_; }
  // Writes the count elements (the guards stay poisoned).
  void upload(const std::vector<T>& values);
  // Poisons all elements.
  void poison();
  // The count elements. The caller synchronises first.
  std::vector<T> download() const;
  // CHECKs that the guards are intact / that everything equals what the host last wrote, bit for
  // bit.
  void check_guard(const std::string& name) const;
  void check_unchanged(const std::string& name) const;

 private:
  std::vector<T> download_all() const;
  void write_mirror();
  T* ptr_ = nullptr;  // the allocation
  size_t count_, guard_, lead_;
  std::vector<T> mirror_;  // lead + count + guard elements
};

// The lead of the i-th array of a call: kGuard (256-byte aligned), or, misaligned, 1 to 3
// elements more, so that the arrays of one call sit at different offsets from any vector
// boundary. Kernels must not assume more alignment than an element's.
inline size_t lead_for(bool misaligned, int i) {
  return misaligned ? kGuard + 1 + static_cast<size_t>(i % 3) : kGuard;
}

using Floats = DeviceArray<float>;
using Labels = DeviceArray<int32_t>;

// ---- comparisons
// ---------------------------------------------------------------------------------

// Per-element comparison of fp32 results with the reference. A reference NaN expects a NaN, an
// infinite one the same infinity.
class Comparison {
 public:
  Comparison(std::string what, double tol) : what_(std::move(what)), tol_(tol) {}
  // Shape used to print indices as coordinates, outermost first (optional).
  Comparison& dims(std::vector<int64_t> dims);
  // |got - ref| <= tol * scale + kAbsFloor, got finite (NaN where ref is NaN, the same infinity
  // where ref is infinite).
  void element(size_t index, float got, double ref, double scale);
  // got must equal `expected` bit for bit (gaps the op must leave alone).
  void untouched(size_t index, float got, float expected);
  bool ok() const { return failures_ == 0; }
  std::string report() const;

 private:
  std::string where(size_t index) const;
  std::string what_;
  double tol_;
  std::vector<int64_t> dims_;
  size_t checked_ = 0, failures_ = 0;
  double worst_ratio_ = 0.0;  // max |got - ref| / (tol * scale + floor) over finite elements
  size_t worst_index_ = 0;
  float worst_got_ = 0;
  double worst_ref_ = 0, worst_scale_ = 0;
  std::vector<std::string> first_failures_;
};

// Compares got[i] with ref[i] at tol * scale[i], for every i.
Comparison compare(const std::string& what, const std::vector<float>& got,
                   const std::vector<double>& ref, const std::vector<double>& scale, double tol);
// got[i] must be exactly ref[i] rounded to fp32 (ops that are exact: ReLU, pooling, bias add).
Comparison compare_exact(const std::string& what, const std::vector<float>& got,
                         const std::vector<double>& ref);

// Whether the implementation under test is the portable one (PORTA_OPS unset or "portable"),
// which must provide every dtype: for others, UNSUPPORTED is an accepted answer to f16 and bf16.
bool portable_ops();

// Whether the comparisons print their report to stderr when they pass too
// (PORTA_OPS_TEST_VERBOSE=1), to see how close each op comes to its tolerance.
bool verbose();

// ---- rejected calls
// ------------------------------------------------------------------------------

// Whether message contains word as a whole word (not inside an identifier).
bool names(const std::string& message, const std::string& word);
std::vector<std::string> split_words(const std::string& words);

// The arrays a rejected call must leave untouched; check() waits for the stream and compares
// each with its mirror.
class Untouched {
 public:
  Untouched(const Env& env, std::vector<std::pair<std::string, const Floats*>> arrays)
      : env_(env), arrays_(std::move(arrays)) {}
  void check() const;

 private:
  const Env& env_;
  std::vector<std::pair<std::string, const Floats*>> arrays_;
};

}  // namespace ops_test

// Asserts that the call (the variadic argument, so that it may hold commas) is refused with
// exactly `expected`, with a message that names each of `words` (a string of space-separated
// words, e.g. "porta_gemm lda") as a whole word, and that nothing of `untouched` changed. The call
// runs on a fresh thread, whose last error message starts empty; it may use the enclosing locals.
#define PT_CHECK_REJECTS(untouched, expected, words, ...)                                      \
  do {                                                                                         \
    const ::porta_test::CallResult pt_result_ =                                                \
        ::porta_test::call_on_fresh_thread([&]() -> porta_status_t { return (__VA_ARGS__); }); \
    INFO(#__VA_ARGS__ << " -> " << porta_status_name(pt_result_.status) << ": \""              \
                      << pt_result_.message << "\"");                                          \
    CHECK(::porta_test::Status{pt_result_.status} == ::porta_test::Status{expected});          \
    CHECK_FALSE(pt_result_.message.empty());                                                   \
    for (const std::string& pt_word_ : ::ops_test::split_words(words)) {                       \
      INFO("the message must name " << pt_word_);                                              \
      CHECK(::ops_test::names(pt_result_.message, pt_word_));                                  \
    }                                                                                          \
    (untouched).check();                                                                       \
  } while (0)

// Checks a Comparison, printing its report (worst element, first failures) on failure.
#define PT_CHECK_CLOSE(comparison)                                                            \
  do {                                                                                        \
    const ::ops_test::Comparison& pt_comparison_ = (comparison);                              \
    if (::ops_test::verbose()) std::fprintf(stderr, "%s\n", pt_comparison_.report().c_str()); \
    INFO(pt_comparison_.report());                                                            \
    CHECK(pt_comparison_.ok());                                                               \
  } while (0)
