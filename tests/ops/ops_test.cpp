#include "ops_test.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <sstream>

namespace ops_test {

// ---- the device and stream of a test
// -------------------------------------------------------------

namespace {
porta_device_t first_device() { return porta_test::devices().front(); }
}  // namespace

Env::Env() : device_(first_device()), stream_(device_) {}

void Env::sync() const { PT_REQUIRE_OK(porta_stream_synchronize(stream_.get())); }

// ---- seeds and random data ---------------------------------------------------------------------

namespace {

uint64_t splitmix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& text) {
  uint64_t hash = 0xCBF29CE484222325ull;
  for (unsigned char c : text) hash = (hash ^ c) * 0x100000001B3ull;
  return hash;
}

}  // namespace

uint64_t seed_for(uint64_t case_index) {
  uint64_t state = fnv1a(Catch::getResultCapture().getCurrentTestName());
  if (const char* extra = std::getenv("PORTA_OPS_TEST_SEED"); extra && *extra) {
    state ^= std::strtoull(extra, nullptr, 0) * 0x9E3779B97F4A7C15ull;
  }
  state += case_index * 0xD1B54A32D192ED03ull;
  return splitmix(state);
}

uint64_t Rng::next() { return splitmix(state_); }

double Rng::uniform() { return (double(next() >> 11) + 0.5) * 0x1p-53; }

double Rng::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  const double radius = std::sqrt(-2.0 * std::log(uniform()));
  const double angle = 2.0 * M_PI * uniform();
  spare_ = radius * std::sin(angle);
  has_spare_ = true;
  return radius * std::cos(angle);
}

int64_t Rng::integer(int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(next() % static_cast<uint64_t>(hi - lo + 1));
}

std::vector<float> normal(Rng& rng, size_t n, double stddev, double mean) {
  std::vector<float> values(n);
  for (float& v : values) {
    do {
      v = static_cast<float>(mean + stddev * rng.normal());
    } while (v == 0.0f);
  }
  return values;
}

std::vector<float> normal_away_from_zero(Rng& rng, size_t n, double margin) {
  std::vector<float> values(n);
  for (float& v : values) {
    do {
      v = static_cast<float>(rng.normal());
    } while (std::fabs(v) < margin);
  }
  return values;
}

std::vector<float> normal_distinct(Rng& rng, size_t n, double gap) {
  std::vector<float> values = normal(rng, n);
  for (;;) {
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), size_t{0});
    std::sort(order.begin(), order.end(),
              [&](size_t i, size_t j) { return values[i] < values[j]; });
    bool redrawn = false;
    for (size_t i = 1; i < n; ++i) {
      if (double(values[order[i]]) - double(values[order[i - 1]]) < gap) {
        values[order[i]] = static_cast<float>(rng.normal());
        redrawn = true;
      }
    }
    if (!redrawn) return values;
  }
}

std::vector<double> widen(const std::vector<float>& values) {
  return std::vector<double>(values.begin(), values.end());
}

std::vector<double> abs_of(const std::vector<double>& values) {
  std::vector<double> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = std::fabs(values[i]);
  return out;
}

namespace {

uint32_t bits_of(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return bits;
}

float float_of(uint32_t bits) {
  float v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

// Rounds v to nearest-even with `keep` significant bits (v normal, no overflow).
float round_significand(float v, int keep) {
  const int drop = 24 - keep;
  uint32_t bits = bits_of(v);
  bits += ((1u << (drop - 1)) - 1) + ((bits >> drop) & 1u);
  return float_of(bits & ~((1u << drop) - 1));
}

float to_f16_value(float v) {
  if (std::fabs(v) < 0x1p-14f) return std::nearbyint(v * 0x1p24f) * 0x1p-24f;  // subnormal half
  return round_significand(v, 11);
}

uint16_t f16_bits(float v) {  // v already representable in f16, |v| < 65504
  const uint32_t sign = bits_of(v) >> 31 << 15;
  const float a = std::fabs(v);
  if (a < 0x1p-14f) return static_cast<uint16_t>(sign | static_cast<uint32_t>(a * 0x1p24f));
  const uint32_t bits = bits_of(a);
  const uint32_t exponent = (bits >> 23) - 127 + 15;
  return static_cast<uint16_t>(sign | exponent << 10 | (bits >> 13 & 0x3FFu));
}

}  // namespace

std::vector<float> round_to_f16(const std::vector<float>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = to_f16_value(values[i]);
  return out;
}

std::vector<float> round_to_bf16(const std::vector<float>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = round_significand(values[i], 8);
  return out;
}

std::vector<uint16_t> encode(porta_dtype_t dtype, const std::vector<float>& values) {
  std::vector<uint16_t> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    out[i] = dtype == PORTA_DTYPE_BF16 ? static_cast<uint16_t>(bits_of(values[i]) >> 16)
                                       : f16_bits(values[i]);
  }
  return out;
}

// ---- device arrays -----------------------------------------------------------------------------

float poison_float() { return float_of(0x7FC0DEADu); }

template <>
float poison_value<float>() {
  return poison_float();
}
template <>
int32_t poison_value<int32_t>() {
  return static_cast<int32_t>(0x7FC0DEAD);
}
template <>
uint16_t poison_value<uint16_t>() {
  return 0x7EAD;  // a NaN in f16 and in bf16
}

template <class T>
DeviceArray<T>::DeviceArray(const Env& env, size_t count, size_t guard, size_t lead)
    : count_(count), guard_(guard), lead_(lead), mirror_(lead + count + guard, poison_value<T>()) {
  void* ptr = nullptr;
  PT_REQUIRE_OK(porta_memory_alloc(env.device(), mirror_.size() * sizeof(T), &ptr));
  ptr_ = static_cast<T*>(ptr);
  write_mirror();
}

template <class T>
DeviceArray<T>::~DeviceArray() {
  if (ptr_) porta_memory_free(ptr_);
}

template <class T>
void DeviceArray<T>::write_mirror() {
  if (!mirror_.empty()) {
    PT_REQUIRE_OK(porta_memcpy(ptr_, mirror_.data(), mirror_.size() * sizeof(T)));
  }
}

template <class T>
void DeviceArray<T>::upload(const std::vector<T>& values) {
  REQUIRE(values.size() == count_);
  std::copy(values.begin(), values.end(), mirror_.begin() + static_cast<ptrdiff_t>(lead_));
  write_mirror();
}

template <class T>
void DeviceArray<T>::poison() {
  std::fill(mirror_.begin(), mirror_.end(), poison_value<T>());
  write_mirror();
}

template <class T>
std::vector<T> DeviceArray<T>::download() const {
  std::vector<T> out(count_);
  if (count_) PT_REQUIRE_OK(porta_memcpy(out.data(), get(), count_ * sizeof(T)));
  return out;
}

template <class T>
std::vector<T> DeviceArray<T>::download_all() const {
  std::vector<T> out(mirror_.size());
  if (!out.empty()) PT_REQUIRE_OK(porta_memcpy(out.data(), ptr_, out.size() * sizeof(T)));
  return out;
}

namespace {
template <class T>
void check_same(const std::string& name, const std::vector<T>& got, const std::vector<T>& expected,
                size_t from, size_t count, size_t origin) {
  size_t changed = 0, first = 0;
  for (size_t i = from; i < from + count; ++i) {
    if (std::memcmp(&got[i], &expected[i], sizeof(T)) != 0 && changed++ == 0) first = i;
  }
  INFO(name << ": " << changed << " of " << count << " elements changed; the first at index "
            << static_cast<int64_t>(first) - static_cast<int64_t>(origin)
            << " (relative to the data's start)");
  CHECK(changed == 0);
}
}  // namespace

template <class T>
void DeviceArray<T>::check_guard(const std::string& name) const {
  const std::vector<T> all = download_all();
  check_same(name + " (guard before the start)", all, mirror_, 0, lead_, lead_);
  check_same(name + " (guard after the end)", all, mirror_, lead_ + count_, guard_, lead_);
}

template <class T>
void DeviceArray<T>::check_unchanged(const std::string& name) const {
  check_same(name, download_all(), mirror_, 0, mirror_.size(), lead_);
}

template class DeviceArray<float>;
template class DeviceArray<int32_t>;
template class DeviceArray<uint16_t>;

// ---- comparisons
// ---------------------------------------------------------------------------------

Comparison& Comparison::dims(std::vector<int64_t> dims) {
  dims_ = std::move(dims);
  return *this;
}

std::string Comparison::where(size_t index) const {
  std::ostringstream out;
  out << index;
  if (!dims_.empty()) {
    std::vector<int64_t> coordinates(dims_.size());
    size_t rest = index;
    for (size_t d = dims_.size(); d-- > 0;) {
      coordinates[d] = static_cast<int64_t>(rest % static_cast<size_t>(dims_[d]));
      rest /= static_cast<size_t>(dims_[d]);
    }
    out << " [";
    for (size_t d = 0; d < coordinates.size(); ++d) out << (d ? "," : "") << coordinates[d];
    out << "]";
  }
  return out.str();
}

void Comparison::element(size_t index, float got, double ref, double scale) {
  ++checked_;
  bool good;
  double ratio = 0.0;
  if (std::isnan(ref)) {
    good = std::isnan(got);
  } else if (std::isinf(ref)) {
    good = double(got) == ref;
  } else if (!std::isfinite(got)) {
    good = false;
    ratio = std::numeric_limits<double>::infinity();
  } else {
    ratio = std::fabs(double(got) - ref) / (tol_ * scale + kAbsFloor);
    good = ratio <= 1.0;
  }
  if (ratio > worst_ratio_ || checked_ == 1) {
    worst_ratio_ = std::max(ratio, worst_ratio_);
    worst_index_ = index;
    worst_got_ = got;
    worst_ref_ = ref;
    worst_scale_ = scale;
  }
  if (!good && failures_++ < 5) {
    std::ostringstream out;
    out.precision(9);
    out << "  at " << where(index) << ": got " << got << ", expected " << ref << " (allowed error "
        << tol_ * scale + kAbsFloor << ")";
    first_failures_.push_back(out.str());
  }
}

void Comparison::untouched(size_t index, float got, float expected) {
  ++checked_;
  if (std::memcmp(&got, &expected, sizeof got) == 0) return;
  if (failures_++ < 5) {
    std::ostringstream out;
    out << "  at " << where(index) << ": got " << got << " where the op must write nothing";
    first_failures_.push_back(out.str());
  }
}

std::string Comparison::report() const {
  std::ostringstream out;
  out.precision(9);
  out << what_ << ": " << failures_ << " of " << checked_ << " elements out of tolerance (tol "
      << tol_ << " x scale); worst error / allowed = " << worst_ratio_ << " at "
      << where(worst_index_) << " (got " << worst_got_ << ", expected " << worst_ref_ << ", scale "
      << worst_scale_ << ")";
  for (const std::string& line : first_failures_) out << "\n" << line;
  return out.str();
}

Comparison compare(const std::string& what, const std::vector<float>& got,
                   const std::vector<double>& ref, const std::vector<double>& scale, double tol) {
  REQUIRE(got.size() == ref.size());
  REQUIRE(scale.size() == ref.size());
  Comparison comparison(what, tol);
  for (size_t i = 0; i < got.size(); ++i) comparison.element(i, got[i], ref[i], scale[i]);
  return comparison;
}

Comparison compare_exact(const std::string& what, const std::vector<float>& got,
                         const std::vector<double>& ref) {
  REQUIRE(got.size() == ref.size());
  // Half an ulp of the result: only the correctly rounded fp32 value passes.
  Comparison comparison(what, kU);
  for (size_t i = 0; i < got.size(); ++i) {
    comparison.element(i, got[i], ref[i], std::fabs(ref[i]));
  }
  return comparison;
}

bool portable_ops() {
  static const bool on = [] {
    const char* value = std::getenv("PORTA_OPS");
    return !value || !*value || std::string(value) == "portable";
  }();
  return on;
}

bool verbose() {
  static const bool on = [] {
    const char* value = std::getenv("PORTA_OPS_TEST_VERBOSE");
    return value && *value && std::string(value) != "0";
  }();
  return on;
}

// ---- rejected calls
// ------------------------------------------------------------------------------

bool names(const std::string& message, const std::string& word) {
  const auto identifier = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  };
  for (size_t at = message.find(word); at != std::string::npos; at = message.find(word, at + 1)) {
    const bool starts = at == 0 || !identifier(message[at - 1]);
    const size_t end = at + word.size();
    const bool ends = end == message.size() || !identifier(message[end]);
    if (starts && ends) return true;
  }
  return false;
}

std::vector<std::string> split_words(const std::string& words) {
  std::vector<std::string> out;
  std::istringstream in(words);
  for (std::string word; in >> word;) out.push_back(word);
  return out;
}

void Untouched::check() const {
  env_.sync();
  for (const auto& [name, array] : arrays_) array->check_unchanged(name);
}

}  // namespace ops_test
