// The checks a shared object's image passes before dlopen maps it, in libporta's loader (plugins)
// and in the CPU backend (kernel libraries) alike. glibc's loader trusts what it maps: segments
// past the end of a truncated file raise SIGBUS when touched, and a malformed dynamic section
// sends its reads and relocations anywhere. Header-only, as libporta links no plugin_kit.
#pragma once

#include <elf.h>
#include <porta/porta.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
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
constexpr uint16_t kHostMachine = EM_NONE;                    // not checked
#endif

#if defined(__x86_64__)
constexpr uint32_t kRelative = R_X86_64_RELATIVE, kCopy = R_X86_64_COPY,
                   kIrelative = R_X86_64_IRELATIVE;
#elif defined(__aarch64__)
constexpr uint32_t kRelative = R_AARCH64_RELATIVE, kCopy = R_AARCH64_COPY,
                   kIrelative = R_AARCH64_IRELATIVE;
#else
constexpr uint32_t kRelative = 0, kCopy = 0, kIrelative = 0;  // not checked
#endif

inline bool tls_relocation(uint32_t type) {
#if defined(__x86_64__)
  return type == R_X86_64_DTPMOD64 || type == R_X86_64_DTPOFF64 || type == R_X86_64_TPOFF64 ||
         type == R_X86_64_TLSDESC;
#elif defined(__aarch64__)
  return type == R_AARCH64_TLS_DTPMOD || type == R_AARCH64_TLS_DTPREL ||
         type == R_AARCH64_TLS_TPREL || type == R_AARCH64_TLSDESC;
#else
  return false;
#endif
}

// Whether the loader applies relocations of `type` in a shared object, and whether they take a
// symbol's address (glibc resolves symbol 0 to the object's own base). Text relocations may use
// the position-dependent kinds too.
struct RelocationKind {
  bool known, needs_symbol;
};
inline RelocationKind relocation_kind(uint32_t type, bool text_relocations) {
#if defined(__x86_64__)
  switch (type) {
    case R_X86_64_NONE:
    case R_X86_64_RELATIVE:
    case R_X86_64_IRELATIVE:
    case R_X86_64_DTPMOD64:
    case R_X86_64_TPOFF64:
    case R_X86_64_64:
    case R_X86_64_DTPOFF64:  // symbol 0: an offset in the object's own TLS block
    case R_X86_64_TLSDESC:
      return {true, false};
    case R_X86_64_GLOB_DAT:
    case R_X86_64_JUMP_SLOT:
      return {true, true};
    case R_X86_64_PC32:
    case R_X86_64_32:
    case R_X86_64_32S:
    case R_X86_64_PC64:
      return {text_relocations, false};
    default:
      return {false, false};
  }
#else
  (void)type, (void)text_relocations;
  return {true, false};  // not checked
#endif
}

template <typename T>
T load(const char* bytes) {
  T value;
  std::memcpy(&value, bytes, sizeof(value));
  return value;
}

inline bool power_of_two(uint64_t n) { return n != 0 && (n & (n - 1)) == 0; }

// An image's loadable segments, to tell whether an address the dynamic section names lies in
// memory the loader maps for it, and with which permissions.
class Segments {
 public:
  Segments(const char* data, const std::vector<Elf64_Phdr>& loads) : data_(data), loads_(loads) {}

  // Whether [address, address + bytes) lies in one segment's memory, with all of `flags`.
  bool mapped(uint64_t address, uint64_t bytes, uint32_t flags = PF_R) const {
    const Elf64_Phdr* segment = segment_of(address, bytes);
    return segment && (segment->p_flags & flags) == flags;
  }

  // The file bytes behind [address, address + bytes) in a readable segment, or nullptr if they
  // are not all in the file (past a segment's file size the loader maps zeros; nothing there is
  // worth reading).
  const char* file_bytes(uint64_t address, uint64_t bytes) const {
    const Elf64_Phdr* segment = segment_of(address, bytes);
    if (!segment || !(segment->p_flags & PF_R) ||
        address - segment->p_vaddr + bytes > segment->p_filesz) {
      return nullptr;
    }
    return data_ + segment->p_offset + (address - segment->p_vaddr);
  }

  // Whether code the loader calls at `address` is in the file part of an executable segment.
  bool code(uint64_t address) const {
    const Elf64_Phdr* segment = segment_of(address, 1);
    return segment && (segment->p_flags & PF_X) && address - segment->p_vaddr < segment->p_filesz;
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

// The segments glibc maps and then reads or writes through its own pointers, each of which must
// lie in the loadable segments: the dynamic section (rebased in place where its segment is
// writable; glibc leaves a read-only one, as lld's -z rodynamic makes, as it is), RELRO (made read-only after relocation: elsewhere that would be someone
// else's memory), the TLS initialisation image, the program headers and notes.
inline void check_segments(const char* data, const Elf64_Ehdr& header,
                           const std::vector<Elf64_Phdr>& loads,
                           const std::vector<Elf64_Phdr>& others) {
  auto malformed = [](const std::string& what) {
    fail(PORTA_ERROR_INVALID_ARGUMENT, "malformed ELF file: " + what);
  };
  // The loader reserves the span from the first segment to the end of the last, then maps each
  // one at its place inside it: out of order or overlapping, a segment lands outside the span,
  // over whatever the process has there.
  for (size_t i = 1; i < loads.size(); ++i) {
    if (loads[i].p_vaddr < loads[i - 1].p_vaddr + loads[i - 1].p_memsz) {
      malformed("its loadable segments are out of order or overlap");
    }
  }
  const Segments segments(data, loads);
  for (const Elf64_Phdr& segment : others) {
    switch (segment.p_type) {
      case PT_DYNAMIC:
        if (!segments.mapped(segment.p_vaddr, segment.p_memsz)) {
          malformed("the dynamic section does not lie in a loadable segment");
        }
        break;
      case PT_GNU_RELRO:
        if (!segments.mapped(segment.p_vaddr, segment.p_memsz)) {
          malformed("PT_GNU_RELRO does not lie in a loadable segment");
        }
        break;
      case PT_TLS:
        if (segment.p_filesz > segment.p_memsz ||
            (segment.p_align > 1 && !power_of_two(segment.p_align)) ||
            !segments.file_bytes(segment.p_vaddr, segment.p_filesz)) {
          malformed("its TLS segment's image or alignment is inconsistent");
        }
        break;
      case PT_PHDR:
        if (segment.p_filesz != uint64_t{header.e_phnum} * sizeof(Elf64_Phdr) ||
            segments.file_bytes(segment.p_vaddr, segment.p_filesz) != data + header.e_phoff) {
          malformed("PT_PHDR does not name the program headers in a loadable segment");
        }
        break;
      case PT_NOTE:
      case PT_GNU_PROPERTY:
      case PT_GNU_EH_FRAME:
        if (!segments.file_bytes(segment.p_vaddr, segment.p_filesz)) {
          malformed("segment type " + std::to_string(segment.p_type) +
                    " does not lie in a loadable segment of the file");
        }
        break;
      default:
        break;
    }
  }
}

// glibc's loader trusts the dynamic section: the tables it names are read, and relocations
// written, wherever their addresses point, and their indices are not checked. So every table must
// lie inside the segments the loader maps, every index inside its table, every name inside the
// string table, and every relocation inside the object's writable memory. This catches malformed
// images; it cannot make a well-formed one harmless (it runs its constructors).
class DynamicCheck {
 public:
  DynamicCheck(const char* data, uint64_t size, const std::vector<Elf64_Phdr>& loads)
      : data_(data), size_(size), segments_(data, loads) {}

  void run(const Elf64_Phdr& dynamic) {
    dynamic_ = dynamic;
    read_entries(dynamic);
    check_entry_sizes();
    check_tables();
    check_strings();
    // The symbols the loader reads: those its hash table reaches, and those relocations name (a
    // linker may leave undefined ones out of DT_GNU_HASH's reach).
    const uint64_t hashed = std::max(sysv_hash_symbols(), gnu_hash_symbols());
    if (hashed == 0) malformed("no DT_HASH or DT_GNU_HASH to find its symbols by");
    symbol_count_ = std::max(hashed, relocated_symbols());
    check_symbols();
    check_versions();
    check_relocations();
    check_relr();
    check_constructors();
  }

 private:
  [[noreturn]] static void malformed(const std::string& what) {
    fail(PORTA_ERROR_INVALID_ARGUMENT, "malformed ELF dynamic section: " + what);
  }

  bool has(int64_t tag) const { return tags_.count(tag) != 0; }
  uint64_t value(int64_t tag) const {
    const auto found = tags_.find(tag);
    return found == tags_.end() ? 0 : found->second;
  }
  // The file bytes of `bytes` at the address `tag` names, or a refusal naming `what`.
  const char* table(uint64_t address, uint64_t bytes, const std::string& what) const {
    const char* at = segments_.file_bytes(address, bytes);
    if (!at) malformed(what + " (" + std::to_string(bytes) + " bytes) lies outside the file");
    return at;
  }
  void check_name(uint64_t offset, const char* what) const {
    if (offset >= value(DT_STRSZ)) {
      malformed(std::string(what) + "'s offset " + std::to_string(offset) +
                " lies outside the string table");
    }
  }

  void read_entries(const Elf64_Phdr& dynamic) {
    const char* entries = segments_.file_bytes(dynamic.p_vaddr, dynamic.p_filesz);
    if (!entries || static_cast<uint64_t>(entries - data_) != dynamic.p_offset) {
      malformed("it does not lie in a loadable segment of the file");
    }
    for (uint64_t at = 0; at + sizeof(Elf64_Dyn) <= dynamic.p_filesz; at += sizeof(Elf64_Dyn)) {
      const auto entry = load<Elf64_Dyn>(entries + at);
      if (entry.d_tag == DT_NULL) return;
      // glibc keeps the last of repeated entries; so does this.
      tags_[entry.d_tag] = entry.d_un.d_val;
      if (entry.d_tag == DT_NEEDED || entry.d_tag == DT_SONAME || entry.d_tag == DT_RPATH ||
          entry.d_tag == DT_RUNPATH || entry.d_tag == DT_AUXILIARY || entry.d_tag == DT_FILTER) {
        names_.push_back(entry.d_un.d_val);
        if (entry.d_tag == DT_NEEDED) needed_.push_back(entry.d_un.d_val);
      }
    }
    malformed("no DT_NULL entry ends it");
  }

  // glibc asserts these (ending the process) rather than refusing the object.
  void check_entry_sizes() const {
    const struct {
      int64_t table, entry;
      uint64_t size;
      const char* name;
    } sizes[] = {{DT_RELA, DT_RELAENT, sizeof(Elf64_Rela), "DT_RELAENT"},
                 {DT_REL, DT_RELENT, sizeof(Elf64_Rel), "DT_RELENT"},
                 {DT_RELR, DT_RELRENT, sizeof(Elf64_Relr), "DT_RELRENT"},
                 {DT_SYMTAB, DT_SYMENT, sizeof(Elf64_Sym), "DT_SYMENT"}};
    for (const auto& size : sizes) {
      // A relocation table needs its entry size; the symbol table's is optional.
      const bool required = size.table != DT_SYMTAB && has(size.table);
      if ((required || has(size.entry)) && value(size.entry) != size.size) {
        malformed(std::string(size.name) + " is " +
                  (has(size.entry) ? std::to_string(value(size.entry)) : "missing") + ", not " +
                  std::to_string(size.size));
      }
    }
    // glibc takes DT_PLTREL to mean there is a DT_JMPREL, and without DT_VERSYM binds every
    // symbol to its oldest version (another ABI) although the object needs versions.
    if (has(DT_JMPREL) != has(DT_PLTREL)) malformed("DT_JMPREL and DT_PLTREL come only together");
    if ((has(DT_VERNEED) || has(DT_VERDEF)) && !has(DT_VERSYM)) {
      malformed("version tables without DT_VERSYM");
    }
    // glibc asserts when a filtee fails to load as it cleans up; no plugin is a filter.
    if (has(DT_FILTER) || has(DT_AUXILIARY))
      malformed("a filter object (DT_FILTER or DT_AUXILIARY)");
    if (has(DT_PLTREL) && value(DT_PLTREL) != DT_RELA && value(DT_PLTREL) != DT_REL) {
      malformed("DT_PLTREL is " + std::to_string(value(DT_PLTREL)) +
                ", neither DT_RELA nor DT_REL");
    }
  }

  // Tables with a size, and those whose size the loader finds elsewhere (one byte is the least).
  void check_tables() const {
    const struct {
      int64_t address, size;
      const char* name;
    } tables[] = {{DT_STRTAB, DT_STRSZ, "DT_STRTAB"},
                  {DT_SYMTAB, -1, "DT_SYMTAB"},
                  {DT_HASH, -1, "DT_HASH"},
                  {DT_GNU_HASH, -1, "DT_GNU_HASH"},
                  {DT_VERSYM, -1, "DT_VERSYM"},
                  {DT_VERDEF, -1, "DT_VERDEF"},
                  {DT_VERNEED, -1, "DT_VERNEED"},
                  {DT_RELA, DT_RELASZ, "DT_RELA"},
                  {DT_REL, DT_RELSZ, "DT_REL"},
                  {DT_RELR, DT_RELRSZ, "DT_RELR"},
                  {DT_JMPREL, DT_PLTRELSZ, "DT_JMPREL"},
                  {DT_INIT, -1, "DT_INIT"},
                  {DT_FINI, -1, "DT_FINI"},
                  {DT_INIT_ARRAY, DT_INIT_ARRAYSZ, "DT_INIT_ARRAY"},
                  {DT_FINI_ARRAY, DT_FINI_ARRAYSZ, "DT_FINI_ARRAY"},
                  {DT_PREINIT_ARRAY, DT_PREINIT_ARRAYSZ, "DT_PREINIT_ARRAY"},
                  {DT_PLTGOT, -1, "DT_PLTGOT"}};
    for (const auto& table : tables) {
      if (!has(table.address)) continue;
      // glibc reads the size's entry without looking whether there is one.
      if (table.size >= 0 && !has(table.size))
        malformed(std::string(table.name) + " without its size");
      const uint64_t bytes = table.size >= 0 ? value(table.size) : 1;
      if (!segments_.mapped(value(table.address), bytes)) {
        malformed(std::string(table.name) + " (" + std::to_string(bytes) +
                  " bytes) lies outside the object's loadable segments");
      }
    }
    for (const auto& [function, name] :
         {std::pair{DT_INIT, "DT_INIT"}, std::pair{DT_FINI, "DT_FINI"}}) {
      if (has(function) && !segments_.code(value(function))) {
        malformed(std::string(name) + " does not lie in an executable segment");
      }
    }
  }

  // Every name ends inside the string table when its last byte is a NUL.
  void check_strings() const {
    if (!has(DT_STRTAB) || !has(DT_SYMTAB)) malformed("no DT_STRTAB or DT_SYMTAB");
    const char* strings = table(value(DT_STRTAB), value(DT_STRSZ), "DT_STRTAB");
    if (value(DT_STRSZ) == 0 || strings[value(DT_STRSZ) - 1] != '\0') {
      malformed("the string table does not end with a NUL");
    }
    for (uint64_t name : names_) check_name(name, "a name");
  }

  // DT_HASH: nbucket, nchain, the buckets, then one chain entry per symbol (nchain symbols).
  uint64_t sysv_hash_symbols() const {
    if (!has(DT_HASH)) return 0;
    const char* header = table(value(DT_HASH), 8, "DT_HASH");
    const uint64_t buckets = load<uint32_t>(header), chains = load<uint32_t>(header + 4);
    const char* words =
        table(value(DT_HASH) + 8, 4 * (buckets + chains), "DT_HASH's buckets and chains");
    if (buckets == 0) malformed("DT_HASH has no buckets");
    // Each symbol is on one chain: more steps than symbols means a cycle the lookup never leaves.
    uint64_t steps = 0;
    for (uint64_t bucket = 0; bucket < buckets; ++bucket) {
      for (uint64_t symbol = load<uint32_t>(words + 4 * bucket); symbol != STN_UNDEF;
           symbol = load<uint32_t>(words + 4 * (buckets + symbol))) {
        if (symbol >= chains || ++steps > chains) {
          malformed("DT_HASH's chains run past its " + std::to_string(chains) + " symbols");
        }
      }
    }
    return chains;
  }

  // DT_GNU_HASH: nbuckets, symbias, bloom words (a power of two), shift, the bloom filter, the
  // buckets, then one chain word per symbol from symbias on; a chain ends at a word with bit 0
  // set. The symbol count is where the last chain ends, found as glibc's lookup walks them.
  uint64_t gnu_hash_symbols() const {
    if (!has(DT_GNU_HASH)) return 0;
    const uint64_t address = value(DT_GNU_HASH);
    const char* header = table(address, 16, "DT_GNU_HASH");
    const uint64_t buckets = load<uint32_t>(header), bias = load<uint32_t>(header + 4),
                   bloom = load<uint32_t>(header + 8), shift = load<uint32_t>(header + 12);
    if (buckets == 0) malformed("DT_GNU_HASH has no buckets");
    if (!power_of_two(bloom)) {
      malformed("DT_GNU_HASH's bloom filter size " + std::to_string(bloom) +
                " is not a power of two");
    }
    if (shift >= 64)
      malformed("DT_GNU_HASH's bloom shift " + std::to_string(shift) + " is too large");
    const uint64_t chains_at = address + 16 + 8 * bloom + 4 * buckets;
    const char* words =
        table(address + 16, 8 * bloom + 4 * buckets, "DT_GNU_HASH's bloom filter and buckets") +
        8 * bloom;
    uint64_t count = bias, steps = 0;
    for (uint64_t bucket = 0; bucket < buckets; ++bucket) {
      uint64_t symbol = load<uint32_t>(words + 4 * bucket);
      if (symbol == 0) continue;
      if (symbol < bias) malformed("a DT_GNU_HASH bucket names a symbol below its bias");
      for (;; ++symbol) {
        // Each chain word is read once in a well-formed table: more steps mean chains overlap.
        if (++steps > size_ / 4) malformed("DT_GNU_HASH's chains overlap");
        const char* word = table(chains_at + 4 * (symbol - bias), 4, "a DT_GNU_HASH chain");
        if (load<uint32_t>(word) & 1) break;
      }
      count = std::max(count, symbol + 1);
    }
    return count;
  }

  // The loader reads each symbol's name, calls the defined functions it resolves to (IFUNC
  // resolvers at once), and hands out the others' addresses.
  void check_symbols() {
    const char* symbols =
        table(value(DT_SYMTAB), symbol_count_ * sizeof(Elf64_Sym), "the symbol table");
    for (uint64_t i = 0; i < symbol_count_; ++i) {
      const auto symbol = load<Elf64_Sym>(symbols + i * sizeof(Elf64_Sym));
      check_name(symbol.st_name, ("symbol " + std::to_string(i)).c_str());
      const unsigned type = ELF64_ST_TYPE(symbol.st_info);
      tls_.push_back(type == STT_TLS);
      // A relocation of a symbol that binds locally (glibc: local, or any visibility but the
      // default) takes the object's base plus its value.
      const bool local = ELF64_ST_BIND(symbol.st_info) == STB_LOCAL ||
                         ELF64_ST_VISIBILITY(symbol.st_other) != STV_DEFAULT;
      if (i > 0 && symbol.st_shndx == SHN_UNDEF && local) {
        malformed("undefined symbol " + std::to_string(i) + " binds locally");
      }
      // Not an address in this object, or (a global of value 0) one glibc's lookup skips.
      if (i == 0 || symbol.st_shndx == SHN_UNDEF || symbol.st_shndx == SHN_ABS || type == STT_TLS ||
          (symbol.st_value == 0 && !local)) {
        continue;
      }
      const bool code = type == STT_FUNC || type == STT_GNU_IFUNC;
      // Data may be empty and end the object (_end).
      if (code ? !segments_.code(symbol.st_value) : !segments_.mapped(symbol.st_value, 0)) {
        malformed("symbol " + std::to_string(i) + "'s value " + std::to_string(symbol.st_value) +
                  (code ? " is not in an executable segment" : " lies outside the object"));
      }
    }
  }

  // glibc indexes its version array (as long as the highest index defined) by DT_VERSYM's entry
  // for each symbol, finds each needed version's object among DT_NEEDED (asserting it is there),
  // and follows the chains until a zero link: DT_VERDEFNUM and DT_VERNEEDNUM bound them here.
  void check_versions() const {
    uint64_t highest = 0;
    if (has(DT_VERDEF)) {
      if (!has(DT_VERDEFNUM)) malformed("DT_VERDEF without DT_VERDEFNUM");
      uint64_t at = value(DT_VERDEF);
      for (uint64_t n = 1;; ++n) {
        const auto def =
            load<Elf64_Verdef>(table(at, sizeof(Elf64_Verdef), "a version definition"));
        highest = std::max<uint64_t>(highest, def.vd_ndx & 0x7fff);
        if (def.vd_cnt == 0) malformed("a version definition has no name");
        uint64_t aux = at + def.vd_aux;
        for (uint64_t k = 1;; ++k) {
          const auto name =
              load<Elf64_Verdaux>(table(aux, sizeof(Elf64_Verdaux), "a version name"));
          check_name(name.vda_name, "a version definition's name");
          if (name.vda_next == 0 || k == def.vd_cnt) break;
          aux += name.vda_next;
        }
        if (def.vd_next == 0) break;
        if (n >= value(DT_VERDEFNUM)) malformed("the version definitions run past DT_VERDEFNUM");
        at += def.vd_next;
      }
    }
    if (has(DT_VERNEED)) {
      if (!has(DT_VERNEEDNUM)) malformed("DT_VERNEED without DT_VERNEEDNUM");
      const char* strings = table(value(DT_STRTAB), value(DT_STRSZ), "DT_STRTAB");
      uint64_t at = value(DT_VERNEED);
      for (uint64_t n = 1;; ++n) {
        const auto need = load<Elf64_Verneed>(table(at, sizeof(Elf64_Verneed), "a version need"));
        check_name(need.vn_file, "a version need's file");
        bool found = false;
        for (uint64_t name : needed_)
          found |= std::strcmp(strings + name, strings + need.vn_file) == 0;
        if (!found) malformed("a version need names a file not in DT_NEEDED");
        uint64_t aux = at + need.vn_aux;
        for (uint64_t k = 1;; ++k) {
          const auto version =
              load<Elf64_Vernaux>(table(aux, sizeof(Elf64_Vernaux), "a needed version"));
          check_name(version.vna_name, "a needed version's name");
          highest = std::max<uint64_t>(highest, version.vna_other & 0x7fff);
          if (version.vna_next == 0) break;
          if (k >= need.vn_cnt) malformed("a version need's entries run past its count");
          aux += version.vna_next;
        }
        if (need.vn_next == 0) break;
        if (n >= value(DT_VERNEEDNUM)) malformed("the version needs run past DT_VERNEEDNUM");
        at += need.vn_next;
      }
    }
    if (!has(DT_VERSYM)) return;
    const char* versions = table(value(DT_VERSYM), 2 * symbol_count_, "DT_VERSYM");
    for (uint64_t i = 0; i < symbol_count_; ++i) {
      const unsigned version = load<uint16_t>(versions + 2 * i) & 0x7fff;
      if (version > highest) {
        malformed("symbol " + std::to_string(i) + "'s version " + std::to_string(version) +
                  " is not defined (the highest is " + std::to_string(highest) + ")");
      }
    }
  }

  // One past the highest symbol a relocation names (the relocation tables lie in the file).
  uint64_t relocated_symbols() const {
    const bool plt_rela = !has(DT_PLTREL) || value(DT_PLTREL) == DT_RELA;
    const struct {
      int64_t address, size;
      bool rela;
    } tables[] = {
        {DT_RELA, DT_RELASZ, true}, {DT_REL, DT_RELSZ, false}, {DT_JMPREL, DT_PLTRELSZ, plt_rela}};
    uint64_t count = 0;
    for (const auto& relocations : tables) {
      if (!has(relocations.address)) continue;
      const uint64_t entry_size = relocations.rela ? sizeof(Elf64_Rela) : sizeof(Elf64_Rel);
      const uint64_t bytes = value(relocations.size);
      const char* at = table(value(relocations.address), bytes, "a relocation table");
      for (uint64_t i = 0; i < bytes / entry_size; ++i) {
        const uint64_t symbol = ELF64_R_SYM(load<uint64_t>(at + i * entry_size + 8));
        if (!segments_.file_bytes(value(DT_SYMTAB) + symbol * sizeof(Elf64_Sym),
                                  sizeof(Elf64_Sym))) {
          malformed("a relocation names symbol " + std::to_string(symbol) +
                    ", which lies outside the file");
        }
        count = std::max(count, symbol + 1);
      }
    }
    return count;
  }

  // Relocations write where they say: each target must lie in the object's writable memory
  // (unless it asks for text relocations), and name a symbol of its table.
  void check_relocations() {
    const bool text_relocations = has(DT_TEXTREL) || (value(DT_FLAGS) & DF_TEXTREL);
    const bool plt_rela = !has(DT_PLTREL) || value(DT_PLTREL) == DT_RELA;
    const struct {
      int64_t address, size, count;
      bool rela;
    } tables[] = {{DT_RELA, DT_RELASZ, DT_RELACOUNT, true},
                  {DT_REL, DT_RELSZ, DT_RELCOUNT, false},
                  {DT_JMPREL, DT_PLTRELSZ, -1, plt_rela}};
    for (const auto& relocations : tables) {
      if (!has(relocations.address)) continue;
      const uint64_t entry_size = relocations.rela ? sizeof(Elf64_Rela) : sizeof(Elf64_Rel);
      const uint64_t bytes = value(relocations.size), entries = bytes / entry_size;
      if (bytes % entry_size != 0) malformed("a relocation table's size is not whole entries");
      const char* at = table(value(relocations.address), bytes, "a relocation table");
      // glibc applies the first DT_RELACOUNT (DT_RELCOUNT) entries as relative relocations
      // without looking at their type, after asserting it.
      const uint64_t relative = relocations.count >= 0 ? value(relocations.count) : 0;
      if (relative > entries) {
        malformed(std::string(relocations.rela ? "DT_RELACOUNT " : "DT_RELCOUNT ") +
                  std::to_string(relative) + " is beyond the table's " + std::to_string(entries) +
                  " entries");
      }
      for (uint64_t i = 0; i < entries; ++i) {
        const auto target = load<uint64_t>(at + i * entry_size);  // r_offset, first in both
        const auto info = load<uint64_t>(at + i * entry_size + 8);
        const int64_t addend = relocations.rela ? load<int64_t>(at + i * entry_size + 16) : 0;
        const uint32_t type = ELF64_R_TYPE(info);
        const uint64_t symbol = ELF64_R_SYM(info);
        if (!segments_.mapped(target, sizeof(uint64_t))) {
          malformed("a relocation writes to " + std::to_string(target) +
                    ", outside the object's loadable segments");
        }
        // glibc reads the dynamic section again after relocating.
        if (target < dynamic_.p_vaddr + dynamic_.p_memsz && dynamic_.p_vaddr < target + 8) {
          malformed("a relocation writes to " + std::to_string(target) +
                    ", in the dynamic section");
        }
        if (!text_relocations && !segments_.mapped(target, sizeof(uint64_t), PF_W)) {
          malformed("a relocation writes to " + std::to_string(target) +
                    ", in a read-only segment");
        }
        const RelocationKind kind = relocation_kind(type, text_relocations);
        if (!kind.known) {
          malformed("relocation type " + std::to_string(type) + " is not one for a shared object");
        }
        if (kind.needs_symbol && symbol == 0) {
          malformed("relocation type " + std::to_string(type) + " names no symbol");
        }
        // glibc takes a TLS relocation's value as an offset in the symbol's TLS block, any
        // other's as an address: a symbol of the other kind gives a wild pointer.
        if (symbol != 0 && tls_relocation(type) != tls_[symbol]) {
          malformed("relocation type " + std::to_string(type) + " does not fit symbol " +
                    std::to_string(symbol) + "'s type");
        }
        if (i < relative && type != kRelative) {
          malformed("relocation " + std::to_string(i) + " is within " +
                    (relocations.rela ? "DT_RELACOUNT" : "DT_RELCOUNT") + " but not relative");
        }
        if (kCopy != 0 && type == kCopy) malformed("a copy relocation, valid only in executables");
        // An IFUNC resolver is called as the relocation is applied.
        if (kIrelative != 0 && type == kIrelative && relocations.rela &&
            !segments_.code(static_cast<uint64_t>(addend))) {
          malformed("an IRELATIVE relocation's resolver is not in an executable segment");
        }
        if (type == kRelative && relocations.rela)
          rebased_[target] = addend;
        else if (type != kRelative)
          symbolic_.insert(target);
      }
    }
  }

  // DT_RELR: an address, then bitmaps of the 63 words that follow it, each bit a relative
  // relocation of the word in place.
  void check_relr() {
    if (!has(DT_RELR)) return;
    const uint64_t bytes = value(DT_RELRSZ);
    if (bytes % sizeof(Elf64_Relr) != 0) malformed("DT_RELRSZ is not whole entries");
    const char* at = table(value(DT_RELR), bytes, "DT_RELR");
    uint64_t base = 0;
    for (uint64_t i = 0; i < bytes / sizeof(Elf64_Relr); ++i) {
      const auto entry = load<uint64_t>(at + i * sizeof(Elf64_Relr));
      std::vector<uint64_t> targets;
      if ((entry & 1) == 0) {
        targets.push_back(entry);
        base = entry + 8;
      } else {
        for (unsigned bit = 1; bit < 64; ++bit) {
          if ((entry >> bit) & 1) targets.push_back(base + (bit - 1) * 8);
        }
        base += 63 * 8;
      }
      for (uint64_t target : targets) {
        const char* word = segments_.file_bytes(target, 8);
        if (!word || !segments_.mapped(target, 8, PF_W) ||
            (target < dynamic_.p_vaddr + dynamic_.p_memsz && dynamic_.p_vaddr < target + 8)) {
          malformed("a DT_RELR relocation writes to " + std::to_string(target) +
                    ", outside the object's writable segments");
        }
        rebased_[target] = load<int64_t>(word);
      }
    }
  }

  // The loader calls every entry of the constructor and destructor arrays: each must be rebased
  // (relocated relative to the object) to code in it, or set by a symbol's relocation.
  void check_constructors() const {
    for (const auto& [address, size, name] :
         {std::tuple{DT_INIT_ARRAY, DT_INIT_ARRAYSZ, "DT_INIT_ARRAY"},
          std::tuple{DT_FINI_ARRAY, DT_FINI_ARRAYSZ, "DT_FINI_ARRAY"},
          std::tuple{DT_PREINIT_ARRAY, DT_PREINIT_ARRAYSZ, "DT_PREINIT_ARRAY"}}) {
      if (!has(address)) continue;
      for (uint64_t slot = value(address); slot < value(address) + value(size) / 8 * 8; slot += 8) {
        if (symbolic_.count(slot)) continue;
        const auto rebased = rebased_.find(slot);
        if (rebased == rebased_.end() || !segments_.code(static_cast<uint64_t>(rebased->second))) {
          malformed(std::string("an entry of ") + name +
                    " is not relocated to an executable segment");
        }
      }
    }
  }

  const char* data_;
  uint64_t size_;
  Segments segments_;
  Elf64_Phdr dynamic_{};
  std::map<int64_t, uint64_t> tags_;
  std::vector<uint64_t> names_, needed_;  // string table offsets
  uint64_t symbol_count_ = 0;
  std::map<uint64_t, int64_t> rebased_;  // relative relocations' targets and values
  std::vector<bool> tls_;                // per symbol: whether it is thread-local
  std::set<uint64_t> symbolic_;          // the targets of the other relocations
};

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
  std::vector<Elf64_Phdr> loads, others;
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
    if (segment.p_type != PT_LOAD) others.push_back(segment);
    if (segment.p_type == PT_DYNAMIC) dynamic = segment;
  }
  check_segments(static_cast<const char*>(data), header, loads, others);
  if (dynamic) DynamicCheck(static_cast<const char*>(data), size, loads).run(*dynamic);
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
