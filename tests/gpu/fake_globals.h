// What the stand-in drivers answer for cuModuleGetGlobal / hipModuleGetGlobal: a global's
// initial bytes, found by name in the symbol table of the image the module was loaded from, as a
// driver finds it. The image is a code object (ELF: an AMD code object or a cubin) or a CUDA
// fatbin, whose cubins are searched in turn (nvcc stores them uncompressed by default).
#pragma once

#include <elf.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace porta_fake {

// The global name in the ELF image of size bytes at elf, or false.
inline bool find_in_elf(const unsigned char* elf, size_t size, const char* name,
                        const unsigned char** out, size_t* out_size) {
  Elf64_Ehdr header;
  if (size < sizeof header) return false;
  std::memcpy(&header, elf, sizeof header);
  if (std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0 || header.e_ident[EI_CLASS] != ELFCLASS64 ||
      header.e_shentsize != sizeof(Elf64_Shdr) ||
      header.e_shoff + uint64_t{header.e_shnum} * sizeof(Elf64_Shdr) > size) {
    return false;
  }
  auto section = [&](size_t i) {
    Elf64_Shdr s;
    std::memcpy(&s, elf + header.e_shoff + i * sizeof s, sizeof s);
    return s;
  };
  for (size_t i = 0; i < header.e_shnum; ++i) {
    const Elf64_Shdr symtab = section(i);
    if (symtab.sh_type != SHT_SYMTAB || symtab.sh_link >= header.e_shnum) continue;
    const Elf64_Shdr strtab = section(symtab.sh_link);
    if (symtab.sh_offset + symtab.sh_size > size || strtab.sh_offset + strtab.sh_size > size) {
      return false;
    }
    for (size_t j = 0; j < symtab.sh_size / sizeof(Elf64_Sym); ++j) {
      Elf64_Sym symbol;
      std::memcpy(&symbol, elf + symtab.sh_offset + j * sizeof symbol, sizeof symbol);
      if (symbol.st_name >= strtab.sh_size || symbol.st_shndx >= header.e_shnum) continue;
      const char* symbol_name =
          reinterpret_cast<const char*>(elf + strtab.sh_offset) + symbol.st_name;
      if (std::strncmp(symbol_name, name, strtab.sh_size - symbol.st_name) != 0) continue;
      const Elf64_Shdr data = section(symbol.st_shndx);
      const uint64_t offset = data.sh_offset + (symbol.st_value - data.sh_addr);
      if (data.sh_type != SHT_PROGBITS || offset + symbol.st_size > size) return false;
      *out = elf + offset;
      *out_size = symbol.st_size;
      return true;
    }
  }
  return false;
}

// The global name in image (an ELF code object, or a fatbin of them), or false.
inline bool find_global(const void* image, const char* name, const unsigned char** out,
                        size_t* out_size) {
  const auto* bytes = static_cast<const unsigned char*>(image);
  uint32_t magic = 0;
  std::memcpy(&magic, bytes, sizeof magic);
  if (magic != 0xBA55ED50u) {  // not a fatbin: an ELF image, sized by its section headers
    Elf64_Ehdr header;
    std::memcpy(&header, bytes, sizeof header);
    const size_t size = header.e_shoff + size_t{header.e_shnum} * header.e_shentsize;
    return find_in_elf(bytes, size, name, out, out_size);
  }
  // A fatbin: a 16-byte header whose last 8 bytes are the size of what follows.
  uint64_t fat_size = 0;
  std::memcpy(&fat_size, bytes + 8, sizeof fat_size);
  const size_t size = 16 + fat_size;
  for (size_t at = 16; at + SELFMAG <= size; at += 8) {  // cubins start 8-byte aligned
    if (std::memcmp(bytes + at, ELFMAG, SELFMAG) == 0 &&
        find_in_elf(bytes + at, size - at, name, out, out_size)) {
      return true;
    }
  }
  return false;
}

}  // namespace porta_fake
