#include "gpu_image.h"

#include <elf.h>

#include <cstring>
#include <string>
#include <string_view>

#include "gpu_vendor.h"
#include "plugin_kit.h"

namespace porta::gpu {

using plugin::throw_error;

namespace {

#if defined(PORTA_GPU_HIP)
constexpr uint16_t kElfMachine = 224;  // EM_AMDGPU
constexpr const char* kAccepted =
    "an AMD GPU code object (ELF) or a clang offload bundle (plain or compressed)";
#else
constexpr uint16_t kElfMachine = 190;  // EM_CUDA
constexpr const char* kAccepted = "a fatbin, a cubin (ELF) or PTX text";
#endif

[[noreturn]] void refuse(porta_status_t status, const std::string& why) {
  throw_error(status, std::string(kBackendName) + ": module_load_data: " + why);
}

template <typename T>
T read(const unsigned char* bytes, size_t offset) {
  T value;
  std::memcpy(&value, bytes + offset, sizeof(T));
  return value;
}

// offset + length <= size, without overflow.
bool within(uint64_t offset, uint64_t length, size_t size) {
  return offset <= size && length <= size - offset;
}

void check_elf(const unsigned char* bytes, size_t size) {
  if (size < sizeof(Elf64_Ehdr)) refuse(PORTA_ERROR_INVALID_ARGUMENT, "truncated ELF header");
  const auto header = read<Elf64_Ehdr>(bytes, 0);
  if (header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_ident[EI_DATA] != ELFDATA2LSB) {
    refuse(PORTA_ERROR_INCOMPATIBLE_VERSION, "not a 64-bit little-endian ELF");
  }
  if (header.e_machine != kElfMachine) {
    refuse(PORTA_ERROR_INCOMPATIBLE_VERSION, "an ELF for machine " +
                                                 std::to_string(header.e_machine) + ", not " +
                                                 std::to_string(kElfMachine) + " (" + kVendorName +
                                                 "): a code object for " + "another device");
  }
  if (header.e_shnum > 0) {
    if (header.e_shentsize != sizeof(Elf64_Shdr) ||
        !within(header.e_shoff, uint64_t{header.e_shnum} * sizeof(Elf64_Shdr), size)) {
      refuse(PORTA_ERROR_INVALID_ARGUMENT, "truncated ELF: section headers past the image's end");
    }
    for (uint16_t i = 0; i < header.e_shnum; ++i) {
      const auto section = read<Elf64_Shdr>(bytes, header.e_shoff + i * sizeof(Elf64_Shdr));
      if (section.sh_type != SHT_NOBITS && !within(section.sh_offset, section.sh_size, size)) {
        refuse(PORTA_ERROR_INVALID_ARGUMENT, "truncated ELF: section " + std::to_string(i) +
                                                 " ends past the image's " + std::to_string(size) +
                                                 " bytes");
      }
    }
  }
  if (header.e_phnum > 0) {
    if (header.e_phentsize != sizeof(Elf64_Phdr) ||
        !within(header.e_phoff, uint64_t{header.e_phnum} * sizeof(Elf64_Phdr), size)) {
      refuse(PORTA_ERROR_INVALID_ARGUMENT, "truncated ELF: program headers past the image's end");
    }
    for (uint16_t i = 0; i < header.e_phnum; ++i) {
      const auto segment = read<Elf64_Phdr>(bytes, header.e_phoff + i * sizeof(Elf64_Phdr));
      if (!within(segment.p_offset, segment.p_filesz, size)) {
        refuse(PORTA_ERROR_INVALID_ARGUMENT,
               "truncated ELF: segment " + std::to_string(i) + " ends past the image's end");
      }
    }
  }
}

#if defined(PORTA_GPU_HIP)
constexpr std::string_view kBundleMagic = "__CLANG_OFFLOAD_BUNDLE__";

void check_bundle(const unsigned char* bytes, size_t size) {
  size_t at = kBundleMagic.size();
  if (!within(at, 8, size)) refuse(PORTA_ERROR_INVALID_ARGUMENT, "truncated offload bundle");
  const auto count = read<uint64_t>(bytes, at);
  at += 8;
  for (uint64_t i = 0; i < count; ++i) {
    if (!within(at, 24, size)) {
      refuse(PORTA_ERROR_INVALID_ARGUMENT, "truncated offload bundle: entry table");
    }
    const auto offset = read<uint64_t>(bytes, at);
    const auto length = read<uint64_t>(bytes, at + 8);
    const auto triple = read<uint64_t>(bytes, at + 16);
    at += 24;
    if (!within(at, triple, size) || !within(offset, length, size)) {
      refuse(PORTA_ERROR_INVALID_ARGUMENT,
             "truncated offload bundle: entry " + std::to_string(i) + " ends past the image");
    }
    at += triple;
  }
}

// A compressed offload bundle (clang-offload-bundler --compress, the default of ROCm 6.2 and
// later): "CCOB", version, method, then in version 2 and later the whole file's size, which must
// lie within the image. The runtime decompresses it; its inner bundle is checked there.
constexpr std::string_view kCompressedBundleMagic = "CCOB";

void check_compressed_bundle(const unsigned char* bytes, size_t size) {
  if (size < 8) refuse(PORTA_ERROR_INVALID_ARGUMENT, "truncated compressed offload bundle");
  const auto version = read<uint16_t>(bytes, 4);
  uint64_t total = 0;
  size_t header = 0;
  switch (version) {
    case 1:  // magic, version, method, uncompressed size (4), hash (8)
      header = 20;
      break;
    case 2:  // magic, version, method, file size (4), uncompressed size (4), hash (8)
      header = 24;
      if (size >= header) total = read<uint32_t>(bytes, 8);
      break;
    case 3:  // magic, version, method, file size (8), uncompressed size (8), hash (8)
      header = 32;
      if (size >= header) total = read<uint64_t>(bytes, 8);
      break;
    default:
      refuse(PORTA_ERROR_INCOMPATIBLE_VERSION, "compressed offload bundle of version " +
                                                   std::to_string(version) +
                                                   "; this plugin knows versions 1 to 3");
  }
  if (size < header) refuse(PORTA_ERROR_INVALID_ARGUMENT, "truncated compressed offload bundle");
  if (total > size || (version > 1 && total < header)) {
    refuse(PORTA_ERROR_INVALID_ARGUMENT, "truncated compressed offload bundle: it declares " +
                                             std::to_string(total) + " bytes, the image has " +
                                             std::to_string(size));
  }
}
#else
constexpr uint32_t kFatbinMagic = 0xBA55ED50u;

void check_fatbin(const unsigned char* bytes, size_t size) {
  // magic (4), version (2), header size (2), payload size (8)
  if (size < 16) refuse(PORTA_ERROR_INVALID_ARGUMENT, "truncated fatbin header");
  const auto header_size = read<uint16_t>(bytes, 6);
  const auto payload_size = read<uint64_t>(bytes, 8);
  if (header_size < 16 || !within(header_size, payload_size, size)) {
    refuse(PORTA_ERROR_INVALID_ARGUMENT, "truncated fatbin: it declares " +
                                             std::to_string(header_size + payload_size) +
                                             " bytes, the image has " + std::to_string(size));
  }
}

bool looks_like_ptx(const unsigned char* bytes, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(bytes), size);
  if (text.find('\0') != std::string_view::npos && text.find('\0') + 1 != size) return false;
  return text.find(".version") != std::string_view::npos &&
         text.find(".target") != std::string_view::npos;
}
#endif

}  // namespace

std::vector<uint64_t> checked_image(const void* image, size_t size) {
  const auto* bytes = static_cast<const unsigned char*>(image);
  if (size >= 4 && std::memcmp(bytes, ELFMAG, SELFMAG) == 0) {
    check_elf(bytes, size);
#if defined(PORTA_GPU_HIP)
  } else if (size >= kBundleMagic.size() &&
             std::memcmp(bytes, kBundleMagic.data(), kBundleMagic.size()) == 0) {
    check_bundle(bytes, size);
  } else if (size >= kCompressedBundleMagic.size() &&
             std::memcmp(bytes, kCompressedBundleMagic.data(), kCompressedBundleMagic.size()) ==
                 0) {
    check_compressed_bundle(bytes, size);
#else
  } else if (size >= 4 && read<uint32_t>(bytes, 0) == kFatbinMagic) {
    check_fatbin(bytes, size);
  } else if (looks_like_ptx(bytes, size)) {
    // PTX is read as a C string: the copy below ends in a NUL.
#endif
  } else {
    refuse(PORTA_ERROR_INVALID_ARGUMENT, std::string("not a code object: expected ") + kAccepted);
  }
  std::vector<uint64_t> copy(size / sizeof(uint64_t) + 1, 0);
  std::memcpy(copy.data(), bytes, size);
  return copy;
}

}  // namespace porta::gpu
