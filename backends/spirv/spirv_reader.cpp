#include "spirv_reader.h"

#include <porta/porta.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "plugin_kit.h"

namespace porta::spirv {

namespace {

constexpr uint32_t kMagic = 0x07230203;
constexpr uint32_t kMagicSwapped = 0x03022307;

// The opcodes, storage classes and decorations the reader looks at (SPIR-V specification 1.6).
enum Op : uint32_t {
  kOpMemoryModel = 14,
  kOpEntryPoint = 15,
  kOpTypeBool = 20,
  kOpTypeInt = 21,
  kOpTypeFloat = 22,
  kOpTypeVector = 23,
  kOpTypeArray = 28,
  kOpTypeStruct = 30,
  kOpTypePointer = 32,
  kOpConstant = 43,
  kOpFunction = 54,
  kOpFunctionParameter = 55,
  kOpDecorate = 71,
};
constexpr uint32_t kExecutionModelKernel = 6;
constexpr uint32_t kAddressingPhysical32 = 1;
constexpr uint32_t kStorageWorkgroup = 4;
constexpr uint32_t kDecorationCPacked = 10;
constexpr uint32_t kDecorationFuncParamAttr = 38;
constexpr uint32_t kFuncParamAttrByVal = 2;

[[noreturn]] void malformed(const std::string& what) {
  plugin::throw_error(PORTA_ERROR_INVALID_ARGUMENT, "malformed SPIR-V module: " + what);
}

struct Type {
  uint32_t op = 0;
  std::vector<uint32_t> operands;  // the words after the result id
};

struct Layout {
  uint64_t size;
  uint64_t align;
};

class Reader {
 public:
  Reader(const uint32_t* words, size_t count, bool swapped) : words_(words, words + count) {
    if (swapped) {
      for (uint32_t& w : words_) w = __builtin_bswap32(w);
    }
  }

  std::map<std::string, KernelSignature> kernels() {
    scan();
    std::map<std::string, KernelSignature> result;
    for (const auto& [function, name] : entry_points_) {
      auto params = params_.find(function);
      KernelSignature signature;
      if (params != params_.end()) {
        for (const auto& [type, id] : params->second) signature.params.push_back(param(type, id));
      }
      result.emplace(name, std::move(signature));
    }
    return result;
  }

 private:
  void scan() {
    if (words_.size() < 5) malformed("shorter than its header");
    size_t at = 5;
    uint32_t current_function = 0;
    while (at < words_.size()) {
      const uint32_t count = words_[at] >> 16;
      const uint32_t op = words_[at] & 0xffff;
      if (count == 0 || at + count > words_.size()) {
        malformed("an instruction at word " + std::to_string(at) + " runs past the end");
      }
      const uint32_t* w = &words_[at + 1];
      const uint32_t n = count - 1;  // operand words
      switch (op) {
        case kOpMemoryModel:
          if (n >= 1 && w[0] == kAddressingPhysical32) pointer_size_ = 4;
          break;
        case kOpEntryPoint:
          if (n >= 3 && w[0] == kExecutionModelKernel) {
            entry_points_[w[1]] = literal_string(w + 2, n - 2);
          }
          break;
        case kOpTypeBool:
        case kOpTypeInt:
        case kOpTypeFloat:
        case kOpTypeVector:
        case kOpTypeArray:
        case kOpTypeStruct:
        case kOpTypePointer:
          if (n >= 1) types_[w[0]] = Type{op, std::vector<uint32_t>(w + 1, w + n)};
          break;
        case kOpConstant:
          if (n >= 3) constants_[w[1]] = w[2];  // the low word: enough for an array length
          break;
        case kOpDecorate:
          if (n >= 3 && w[1] == kDecorationFuncParamAttr && w[2] == kFuncParamAttrByVal) {
            by_value_.insert(w[0]);
          }
          if (n >= 2 && w[1] == kDecorationCPacked) packed_.insert(w[0]);
          break;
        case kOpFunction:
          if (n >= 2) current_function = w[1];
          break;
        case kOpFunctionParameter:
          if (n >= 2 && current_function) params_[current_function].emplace_back(w[0], w[1]);
          break;
        default:
          break;
      }
      at += count;
    }
  }

  static std::string literal_string(const uint32_t* w, uint32_t n) {
    const char* bytes = reinterpret_cast<const char*>(w);
    return std::string(bytes, strnlen(bytes, size_t{n} * 4));
  }

  const Type& type(uint32_t id) const {
    auto it = types_.find(id);
    if (it == types_.end()) malformed("type %" + std::to_string(id) + " is not declared");
    return it->second;
  }

  // Size and alignment as the OpenCL C ABI lays the type out. Each type is laid out once
  // (layouts_): a struct of two copies of the struct before it, nested n deep, would otherwise
  // take 2^n steps. No argument reaches 4 GiB, so larger sizes are refused before they overflow.
  Layout layout(uint32_t id, int depth = 0) const {
    if (depth > 64) malformed("types nest too deeply");
    if (auto known = layouts_.find(id); known != layouts_.end()) return known->second;
    const Layout laid = lay_out(id, depth);
    if (laid.size > UINT32_MAX) malformed("type %" + std::to_string(id) + " is over 4 GiB");
    layouts_.emplace(id, laid);
    return laid;
  }

  // The product of two sizes of at most 4 GiB each, or more than 4 GiB.
  static uint64_t times(uint64_t size, uint64_t count) {
    return count > 0 && size > (uint64_t{1} << 33) / count ? uint64_t{1} << 33 : size * count;
  }

  Layout lay_out(uint32_t id, int depth) const {
    const Type& t = type(id);
    switch (t.op) {
      case kOpTypeBool:
        return {1, 1};
      case kOpTypeInt:
      case kOpTypeFloat: {
        if (t.operands.empty()) malformed("a scalar type without a width");
        const uint64_t bytes = std::max<uint64_t>(1, t.operands[0] / 8);
        return {bytes, bytes};
      }
      case kOpTypeVector: {
        if (t.operands.size() < 2) malformed("a vector type without its components");
        const Layout element = layout(t.operands[0], depth + 1);
        if (t.operands[1] == 0) malformed("a vector type of no components");
        const uint64_t lanes = t.operands[1] == 3 ? 4 : t.operands[1];  // a 3-vector takes 4
        return {times(element.size, lanes), times(element.size, lanes)};
      }
      case kOpTypeArray: {
        if (t.operands.size() < 2) malformed("an array type without its length");
        const Layout element = layout(t.operands[0], depth + 1);
        auto length = constants_.find(t.operands[1]);
        if (length == constants_.end()) malformed("an array length is not a constant");
        return {times(element.size, length->second), element.align};
      }
      case kOpTypeStruct: {
        const bool packed = packed_.count(id) > 0;
        uint64_t size = 0, align = 1;
        for (uint32_t member : t.operands) {
          const Layout m = layout(member, depth + 1);
          const uint64_t a = packed ? 1 : m.align;
          size = (size + a - 1) / a * a + m.size;  // each term under 2^33: no overflow
          if (size > UINT32_MAX) malformed("type %" + std::to_string(id) + " is over 4 GiB");
          align = std::max(align, a);
        }
        return {(size + align - 1) / align * align, align};
      }
      case kOpTypePointer:
        return {pointer_size_, pointer_size_};
      default:
        malformed("type %" + std::to_string(id) + " has no size a kernel argument can take");
    }
  }

  Param param(uint32_t type_id, uint32_t param_id) const {
    const Type& t = type(type_id);
    if (t.op == kOpTypePointer) {
      if (t.operands.size() < 2) malformed("a pointer type without storage class");
      if (by_value_.count(param_id)) {
        return {ParamKind::value, static_cast<uint32_t>(layout(t.operands[1]).size)};
      }
      if (t.operands[0] == kStorageWorkgroup) return {ParamKind::local_pointer, pointer_size_};
      return {ParamKind::global_pointer, pointer_size_};
    }
    return {ParamKind::value, static_cast<uint32_t>(layout(type_id).size)};
  }

  std::vector<uint32_t> words_;
  uint32_t pointer_size_ = 8;
  std::unordered_map<uint32_t, std::string> entry_points_;
  std::unordered_map<uint32_t, Type> types_;
  std::unordered_map<uint32_t, uint64_t> constants_;
  mutable std::unordered_map<uint32_t, Layout> layouts_;  // layout()'s, by type id
  std::unordered_set<uint32_t> by_value_;
  std::unordered_set<uint32_t> packed_;
  std::unordered_map<uint32_t, std::vector<std::pair<uint32_t, uint32_t>>> params_;
};

}  // namespace

size_t KernelSignature::user_param_count() const {
  size_t count = params.size();
  while (count > 0 && params[count - 1].kind == ParamKind::local_pointer) --count;
  return count;
}

std::vector<uint32_t> KernelSignature::user_param_sizes() const {
  std::vector<uint32_t> sizes;
  for (size_t i = 0; i < user_param_count(); ++i) sizes.push_back(params[i].size);
  return sizes;
}

bool is_spirv(const void* image, size_t size) {
  if (!image || size < 20 || size % 4 != 0) return false;
  uint32_t magic = 0;
  std::memcpy(&magic, image, 4);
  return magic == kMagic || magic == kMagicSwapped;
}

std::map<std::string, KernelSignature> read_kernels(const void* image, size_t size) {
  if (!is_spirv(image, size)) malformed("no SPIR-V magic number, or a size not a multiple of 4");
  std::vector<uint32_t> words(size / 4);
  std::memcpy(words.data(), image, size);
  Reader reader(words.data(), words.size(), words[0] == kMagicSwapped);
  return reader.kernels();
}

}  // namespace porta::spirv
