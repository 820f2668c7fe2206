// The checks a shared object's image passes before dlopen maps it, in libporta's loader (plugins)
// and in the CPU backend (kernel libraries) alike. glibc's loader trusts what it maps: segments
// past the end of a truncated file raise SIGBUS when touched, and a malformed dynamic section
// sends its reads and relocations anywhere. Header-only, as libporta links no plugin_kit.
#pragma once

#include <elf.h>
#include <porta/porta.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace porta::elf {

// What is wrong with an image: a status and a message, to follow the file's name.
struct Problem {
  porta_status_t status;
  std::string message;
};

namespace detail {

[[noreturn]] inline void fail(porta_status_t status, std::string message) {
  throw Problem{status, std::move(message)};
}

#if defined(__x86_64__)
constexpr uint16_t kHostMachine = EM_X86_64;
#elif defined(__aarch64__)
constexpr uint16_t kHostMachine = EM_AARCH64;
#else
constexpr uint16_t kHostMachine = EM_NONE;  // not checked
#endif

// An image's loadable segments, to tell whether an address the dynamic section names lies in
// memory the loader maps for it.
class Segments {
 public:
  Segments(const char* data, const std::vector<Elf64_Phdr>& loads) : data_(data), loads_(loads) {}

  // Whether [address, address + bytes) lies in one segment's memory.
  bool mapped(uint64_t address, uint64_t bytes) const { return segment_of(address, bytes); }

  // The file bytes behind [address, address + bytes), or nullptr if they are not all in the file
  // (past a segment's file size the loader maps zeros; nothing there is worth reading).
  const char* file_bytes(uint64_t address, uint64_t bytes) const {
    const Elf64_Phdr* segment = segment_of(address, bytes);
    if (!segment || address - segment->p_vaddr + bytes > segment->p_filesz) return nullptr;
    return data_ + segment->p_offset + (address - segment->p_vaddr);
  }

 private:
  const Elf64_Phdr* segment_of(uint64_t address, uint64_t bytes) const {
    for (const Elf64_Phdr& segment : loads_) {
      if (address >= segment.p_vaddr && address - segment.p_vaddr <= segment.p_memsz &&
          bytes <= segment.p_memsz - (address - segment.p_vaddr)) {
        return &segment;
      }
    }
    return nullptr;
  }

  const char* data_;
  const std::vector<Elf64_Phdr>& loads_;
};

// glibc's loader trusts the dynamic section: the tables it names are read, and relocations
// written, wherever their addresses point. So every table must lie inside the segments the loader
// maps, every name inside the string table, and every relocation inside the object. This catches
// malformed images; it cannot make a well-formed one harmless (it runs its constructors).
inline void check_dynamic_section(const char* data, const std::vector<Elf64_Phdr>& loads,
                                  const Elf64_Phdr& dynamic) {
  const Segments segments(data, loads);
  auto malformed = [&](const std::string& what) {
    fail(PORTA_ERROR_INVALID_ARGUMENT, "malformed ELF dynamic section: " + what);
  };
  const char* entries = segments.file_bytes(dynamic.p_vaddr, dynamic.p_filesz);
  if (!entries || static_cast<uint64_t>(entries - data) != dynamic.p_offset) {
    malformed("it does not lie in a loadable segment of the file");
  }
  uint64_t value[DT_NUM] = {};
  bool present[DT_NUM] = {};
  std::vector<uint64_t> names;  // string table offsets of DT_NEEDED, DT_SONAME, ...
  bool terminated = false;
  for (uint64_t at = 0; at + sizeof(Elf64_Dyn) <= dynamic.p_filesz; at += sizeof(Elf64_Dyn)) {
    Elf64_Dyn entry;
    std::memcpy(&entry, entries + at, sizeof(entry));
    if (entry.d_tag == DT_NULL) {
      terminated = true;
      break;
    }
    if (entry.d_tag == DT_NEEDED || entry.d_tag == DT_SONAME || entry.d_tag == DT_RPATH ||
        entry.d_tag == DT_RUNPATH) {
      names.push_back(entry.d_un.d_val);
    }
    if (entry.d_tag > 0 && entry.d_tag < DT_NUM) {
      value[entry.d_tag] = entry.d_un.d_val;
      present[entry.d_tag] = true;
    }
    // Addresses outside the standard range (GNU hash, versions) must be mapped too.
    if ((entry.d_tag == DT_GNU_HASH || entry.d_tag == DT_VERSYM || entry.d_tag == DT_VERDEF ||
         entry.d_tag == DT_VERNEED) &&
        !segments.mapped(entry.d_un.d_ptr, 1)) {
      malformed("tag " + std::to_string(entry.d_tag) + " points outside the object");
    }
  }
  if (!terminated) malformed("no DT_NULL entry ends it");

  // Tables with a size, and those whose size the loader finds elsewhere (one byte is the least).
  const struct {
    int address, size;
    const char* name;
  } tables[] = {{DT_STRTAB, DT_STRSZ, "DT_STRTAB"},
                {DT_SYMTAB, -1, "DT_SYMTAB"},
                {DT_HASH, -1, "DT_HASH"},
                {DT_RELA, DT_RELASZ, "DT_RELA"},
                {DT_REL, DT_RELSZ, "DT_REL"},
                {DT_JMPREL, DT_PLTRELSZ, "DT_JMPREL"},
                {DT_INIT, -1, "DT_INIT"},
                {DT_FINI, -1, "DT_FINI"},
                {DT_INIT_ARRAY, DT_INIT_ARRAYSZ, "DT_INIT_ARRAY"},
                {DT_FINI_ARRAY, DT_FINI_ARRAYSZ, "DT_FINI_ARRAY"},
                {DT_PREINIT_ARRAY, DT_PREINIT_ARRAYSZ, "DT_PREINIT_ARRAY"},
                {DT_PLTGOT, -1, "DT_PLTGOT"}};
  for (const auto& table : tables) {
    if (!present[table.address]) continue;
    const uint64_t bytes = table.size >= 0 ? value[table.size] : 1;
    if (!segments.mapped(value[table.address], bytes)) {
      malformed(std::string(table.name) + " (" + std::to_string(bytes) +
                " bytes) lies outside the object's loadable segments");
    }
  }
  for (uint64_t name : names) {
    if (!present[DT_STRTAB] || name >= value[DT_STRSZ]) {
      malformed("a name's offset " + std::to_string(name) + " lies outside the string table");
    }
  }
  // Relocations write where they say: each target must lie inside the object.
  const bool plt_rela = !present[DT_PLTREL] || value[DT_PLTREL] == DT_RELA;
  const struct {
    int address, size;
    size_t entry_size;
  } relocations[] = {{DT_RELA, DT_RELASZ, sizeof(Elf64_Rela)},
                     {DT_REL, DT_RELSZ, sizeof(Elf64_Rel)},
                     {DT_JMPREL, DT_PLTRELSZ, plt_rela ? sizeof(Elf64_Rela) : sizeof(Elf64_Rel)}};
  for (const auto& table : relocations) {
    if (!present[table.address]) continue;
    const uint64_t bytes = value[table.size];
    const char* entries_at = segments.file_bytes(value[table.address], bytes);
    if (!entries_at) malformed("a relocation table lies outside the file");
    for (uint64_t at = 0; at + table.entry_size <= bytes; at += table.entry_size) {
      uint64_t target;  // r_offset, the first field of both kinds
      std::memcpy(&target, entries_at + at, sizeof(target));
      if (!segments.mapped(target, sizeof(uint64_t))) {
        malformed("a relocation writes to " + std::to_string(target) +
                  ", outside the object's loadable segments");
      }
    }
  }
}

// dlopen would accept a file of another machine only to fail with a vaguer message, and a
// non-ELF file with none that names the real problem; the header says both plainly.
inline void check(const void* data, size_t size) {
  Elf64_Ehdr header;
  if (size < sizeof(header)) {
    if (size < SELFMAG || std::memcmp(data, ELFMAG, SELFMAG) != 0) {
      fail(PORTA_ERROR_INVALID_ARGUMENT, "not an ELF shared object (no ELF magic)");
    }
    fail(PORTA_ERROR_INVALID_ARGUMENT, "truncated ELF file");
  }
  std::memcpy(&header, data, sizeof(header));
  if (std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0) {
    fail(PORTA_ERROR_INVALID_ARGUMENT, "not an ELF shared object (no ELF magic)");
  }
  if (header.e_ident[EI_CLASS] != ELFCLASS64 ||
      (kHostMachine != EM_NONE && header.e_machine != kHostMachine)) {
    fail(PORTA_ERROR_INCOMPATIBLE_VERSION,
         "ELF object built for another machine (class " + std::to_string(header.e_ident[EI_CLASS]) +
             ", machine " + std::to_string(header.e_machine) + "; this host is 64-bit machine " +
             std::to_string(kHostMachine) + ")");
  }
  if (header.e_type != ET_DYN) {
    fail(PORTA_ERROR_INVALID_ARGUMENT, "an ELF file but not a shared object (e_type " +
                                           std::to_string(header.e_type) +
                                           "); build the module with -shared");
  }
  // dlopen maps the loadable segments and touches them: one that runs past the end of a
  // truncated file raises SIGBUS instead of an error, so the segments are checked here.
  const uint64_t table_end = header.e_phoff + uint64_t{header.e_phnum} * sizeof(Elf64_Phdr);
  if (header.e_phentsize != sizeof(Elf64_Phdr) || header.e_phoff > size || table_end > size) {
    fail(PORTA_ERROR_INVALID_ARGUMENT, "truncated or malformed ELF program headers");
  }
  std::vector<Elf64_Phdr> loads;
  std::optional<Elf64_Phdr> dynamic;
  for (uint16_t i = 0; i < header.e_phnum; ++i) {
    Elf64_Phdr segment;
    std::memcpy(&segment, static_cast<const char*>(data) + header.e_phoff + i * sizeof(segment),
                sizeof(segment));
    if (segment.p_type == PT_LOAD &&
        (segment.p_offset > size || segment.p_filesz > size - segment.p_offset)) {
      fail(PORTA_ERROR_INVALID_ARGUMENT, "truncated ELF file (" + std::to_string(size) +
                                             " bytes; a loadable segment "
                                             "ends at byte " +
                                             std::to_string(segment.p_offset + segment.p_filesz) +
                                             ")");
    }
    if (segment.p_type == PT_LOAD) {
      if (segment.p_memsz < segment.p_filesz ||
          segment.p_vaddr + segment.p_memsz < segment.p_vaddr) {
        fail(PORTA_ERROR_INVALID_ARGUMENT,
             "malformed ELF file (a loadable segment's "
             "sizes are inconsistent)");
      }
      loads.push_back(segment);
    }
    if (segment.p_type == PT_DYNAMIC) dynamic = segment;
  }
  if (dynamic) check_dynamic_section(static_cast<const char*>(data), loads, *dynamic);
}

}  // namespace detail

// The first problem found in the image of a shared object for this host, or none.
inline std::optional<Problem> check_shared_object(const void* data, size_t size) {
  try {
    detail::check(data, size);
  } catch (const Problem& problem) {
    return problem;
  }
  return std::nullopt;
}

}  // namespace porta::elf
