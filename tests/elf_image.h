// A built shared object's bytes, with the file offsets of what the loader reads (the dynamic
// entries, relocations, symbols, hash and version tables) found by parsing it, so that tests can
// damage one field of a real image. Little-endian ELF64 only, as the host's own objects are.
#pragma once

#include <elf.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace porta_test {

struct ElfImage {
  std::vector<char> bytes;
  std::vector<size_t> program_headers;  // offsets of each Elf64_Phdr
  std::map<int64_t, size_t> tags;       // dynamic tag -> offset of its d_un

  explicit ElfImage(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (bytes.size() < sizeof(Elf64_Ehdr)) throw std::runtime_error(path + ": not ELF");
    const auto header = get<Elf64_Ehdr>(0);
    for (size_t i = 0; i < header.e_phnum; ++i) {
      program_headers.push_back(header.e_phoff + i * sizeof(Elf64_Phdr));
    }
    const size_t dynamic = segment(PT_DYNAMIC);
    for (size_t at = get<Elf64_Phdr>(dynamic).p_offset;; at += sizeof(Elf64_Dyn)) {
      const auto entry = get<Elf64_Dyn>(at);
      if (entry.d_tag == DT_NULL) break;
      tags[entry.d_tag] = at + offsetof(Elf64_Dyn, d_un);
    }
  }

  template <typename T>
  T get(size_t offset) const {
    T value;
    std::memcpy(&value, bytes.data() + offset, sizeof(value));
    return value;
  }
  template <typename T>
  void put(size_t offset, T value) {
    std::memcpy(bytes.data() + offset, &value, sizeof(value));
  }

  // The offset of the first program header of `type`.
  size_t segment(uint32_t type) const {
    for (size_t at : program_headers) {
      if (get<Elf64_Phdr>(at).p_type == type) return at;
    }
    throw std::runtime_error("no program header of type " + std::to_string(type));
  }
  uint64_t tag(int64_t tag) const { return get<uint64_t>(tags.at(tag)); }
  // The file offset of an address in a loadable segment.
  size_t offset_of(uint64_t address) const {
    for (size_t at : program_headers) {
      const auto load = get<Elf64_Phdr>(at);
      if (load.p_type == PT_LOAD && address >= load.p_vaddr &&
          address < load.p_vaddr + load.p_filesz) {
        return load.p_offset + (address - load.p_vaddr);
      }
    }
    throw std::runtime_error("address " + std::to_string(address) + " is not in the file");
  }
  // The file offset of the table a dynamic tag names.
  size_t table(int64_t address_tag) const { return offset_of(tag(address_tag)); }

  // The offset of the first DT_RELA entry that is not a relative relocation.
  size_t first_symbolic_rela(uint32_t relative_type) const {
    const size_t start = table(DT_RELA);
    for (size_t at = start; at < start + tag(DT_RELASZ); at += sizeof(Elf64_Rela)) {
      if (ELF64_R_TYPE(get<Elf64_Rela>(at).r_info) != relative_type) return at;
    }
    throw std::runtime_error("no symbolic relocation");
  }
};

}  // namespace porta_test
