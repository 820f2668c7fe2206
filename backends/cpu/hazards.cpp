#include "hazards.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

#include "plugin_kit.h"

namespace porta::cpu {
namespace {

std::string hex(uint64_t value) {
  char text[32];
  std::snprintf(text, sizeof(text), "0x%" PRIx64, value);
  return text;
}

// A work-item or group as (x,y,z).
std::string coords(uint32_t x, uint32_t y, uint32_t z) {
  char text[40];
  std::snprintf(text, sizeof(text), "(%" PRIu32 ",%" PRIu32 ",%" PRIu32 ")", x, y, z);
  return text;
}
std::string item_coords(uint32_t item, const uint32_t size[3]) {
  return coords(item % size[0], item / size[0] % size[1], item / (size[0] * size[1]));
}

// A code address as "<library>+0x<offset>" (what addr2line -e <library> takes): the module's
// file by its name, another object by the base name dladdr gives. The sites are return addresses
// of the checker's calls; one byte back lies in the access's own instruction.
std::string site(const CodeModule& module, uintptr_t address) {
  if (address == 0) return "the kernel's end";
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(address), &info) && info.dli_fbase) {
    const auto base = reinterpret_cast<uintptr_t>(info.dli_fbase);
    std::string file;
    if (module.holds(base)) {
      file = module.name();
    } else if (info.dli_fname) {
      file = info.dli_fname;
      const size_t slash = file.rfind('/');
      if (slash != std::string::npos) file.erase(0, slash + 1);
    }
    if (!file.empty()) return file + "+" + hex(address - 1 - base);
  }
  return hex(address - 1);
}

// "PORTA_SHARED <variable> + <bytes>" for an offset in the TLS block of the module, when the
// access at site lies in it and its symbol table names the variable; else the bare offset.
std::string shared_variable(const CodeModule& module, uintptr_t site, uint64_t offset) {
  std::string text = "PORTA_SHARED memory, offset " + std::to_string(offset);
  Dl_info info;
  if (!site || !dladdr(reinterpret_cast<void*>(site), &info) ||
      !module.holds(reinterpret_cast<uintptr_t>(info.dli_fbase))) {
    return text;
  }
  for (const SharedVariable& variable : module.shared_variables()) {
    if (offset >= variable.offset && offset - variable.offset < variable.size) {
      return "PORTA_SHARED " + variable.name + " + " + std::to_string(offset - variable.offset);
    }
  }
  return text;
}

std::string demangle(const char* name) {
  int status = 0;
  char* readable = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  if (status != 0 || !readable) return name;
  std::string text = readable;
  std::free(readable);
  return text;
}

// The thread-local variables of a library (its PORTA_SHARED arrays in a SIMT build), from its
// symbol table: a TLS symbol's value is its offset in the module's TLS block. Empty when the file
// cannot be read or has no symbol table (stripped).
std::vector<SharedVariable> read_shared_variables(const std::string& path) {
  std::vector<SharedVariable> variables;
  std::ifstream file(path, std::ios::binary);
  const std::string image{std::istreambuf_iterator<char>(file), {}};
  Elf64_Ehdr header;
  if (image.size() < sizeof(header)) return variables;
  std::memcpy(&header, image.data(), sizeof(header));
  if (std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0 ||
      header.e_shentsize != sizeof(Elf64_Shdr) || header.e_shoff > image.size() ||
      uint64_t{header.e_shnum} * sizeof(Elf64_Shdr) > image.size() - header.e_shoff) {
    return variables;
  }
  auto section = [&](size_t i) {
    Elf64_Shdr s;
    std::memcpy(&s, image.data() + header.e_shoff + i * sizeof(s), sizeof(s));
    return s;
  };
  for (size_t i = 0; i < header.e_shnum; ++i) {
    const Elf64_Shdr symbols = section(i);
    if (symbols.sh_type != SHT_SYMTAB || symbols.sh_link >= header.e_shnum) continue;
    const Elf64_Shdr strings = section(symbols.sh_link);
    if (symbols.sh_offset > image.size() || symbols.sh_size > image.size() - symbols.sh_offset ||
        strings.sh_offset > image.size() || strings.sh_size > image.size() - strings.sh_offset) {
      continue;
    }
    for (size_t k = 0; k < symbols.sh_size / sizeof(Elf64_Sym); ++k) {
      Elf64_Sym symbol;
      std::memcpy(&symbol, image.data() + symbols.sh_offset + k * sizeof(symbol), sizeof(symbol));
      if (ELF64_ST_TYPE(symbol.st_info) != STT_TLS || symbol.st_name >= strings.sh_size) continue;
      const char* name = image.data() + strings.sh_offset + symbol.st_name;
      if (strnlen(name, strings.sh_size - symbol.st_name) == strings.sh_size - symbol.st_name)
        continue;
      variables.push_back({symbol.st_value, symbol.st_size, demangle(name)});
    }
  }
  return variables;
}

}  // namespace

const std::vector<SharedVariable>& CodeModule::shared_variables() const {
  std::lock_guard lock(mutex_);
  if (!read_) {
    shared_variables_ = read_shared_variables(image_);
    read_ = true;
  }
  return shared_variables_;
}

std::string HazardLog::where(uintptr_t address, const std::vector<void*>& args,
                             const std::vector<uint32_t>& param_sizes) const {
  uintptr_t base = 0;
  size_t size = 0;
  if (!find_allocation_ || !find_allocation_(address, base, size)) {
    return "global memory at " + hex(address) + " (not a Porta allocation)";
  }
  std::string text = "global memory";
  // The parameter pointing into the same allocation, nearest below the address: the buffer the
  // kernel reached it through.
  int parameter = -1;
  uintptr_t nearest = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    if (param_sizes[i] != sizeof(void*)) continue;
    uintptr_t value;
    std::memcpy(&value, args[i], sizeof(value));
    if (value >= base && value - base < size && value <= address && value >= nearest) {
      parameter = static_cast<int>(i);
      nearest = value;
    }
  }
  if (parameter >= 0) {
    text += ", parameter " + std::to_string(parameter) + " + " + std::to_string(address - nearest);
  }
  return text + " (allocation " + hex(base) + " of " + std::to_string(size) + " bytes, offset " +
         std::to_string(address - base) + ")";
}

Hazard HazardLog::describe(const std::string& kernel, const CodeModule& module,
                           const porta_cpu_hazard_t& hazard, const uint32_t group_id[3],
                           const uint32_t group_size[3], const std::vector<void*>& args,
                           const std::vector<uint32_t>& param_sizes) const {
  const std::string group = coords(group_id[0], group_id[1], group_id[2]);
  const std::string a = item_coords(hazard.items[0], group_size);
  const std::string b = item_coords(hazard.items[1], group_size);
  const std::string phase = std::to_string(hazard.phase);
  std::string space;
  switch (hazard.space) {
    case PORTA_CPU_SPACE_GLOBAL:
      space = where(hazard.address, args, param_sizes);
      break;
    case PORTA_CPU_SPACE_SHARED:
      space = shared_variable(module, hazard.sites[1], hazard.address);
      break;
    case PORTA_CPU_SPACE_DYNAMIC_SHARED:
      space = "dynamic shared memory, offset " + std::to_string(hazard.address);
      break;
    default:
      space = "a value outside inner(), " + std::to_string(hazard.address) +
              " bytes below the stack top";
      break;
  }
  std::string text = "kernel '" + kernel + "': ";
  switch (hazard.kind) {
    case PORTA_CPU_HAZARD_WRITE_WRITE:
    case PORTA_CPU_HAZARD_READ_WRITE: {
      const bool ww = hazard.kind == PORTA_CPU_HAZARD_WRITE_WRITE;
      text += std::string(ww ? "write/write" : "read/write") + " race in group " + group +
              " between work-items " + a + " and " + b + " in phase " + phase + " (after " + phase +
              " barriers): " + std::to_string(hazard.size) + " bytes of " + space + "; sites " +
              site(module, hazard.sites[0]) + " and " + site(module, hazard.sites[1]);
      break;
    }
    case PORTA_CPU_HAZARD_DIVERGENT_BARRIER:
      text += "divergent barrier in group " + group + " in phase " + phase + ": work-item " + a +
              " reached " + (hazard.sites[0] ? "the barrier at " : "") +
              site(module, hazard.sites[0]) + ", work-item " + b + " " +
              (hazard.sites[1] ? "the barrier at " : "") + site(module, hazard.sites[1]);
      break;
    default:
      text += "a value kept outside inner() differs between work-items " + a + " and " + b +
              " of group " + group + " and is read in phase " + phase +
              " (on a GPU each item has its own: use porta::exclusive or PORTA_SHARED): " + space +
              "; written at " + site(module, hazard.sites[0]) + ", read at " +
              site(module, hazard.sites[1]);
      break;
  }
  return Hazard{hazard.kind, {hazard.sites[0], hazard.sites[1]}, std::move(text)};
}

std::string HazardLog::record(const std::string& kernel, const std::vector<Hazard>& hazards) {
  {
    std::lock_guard lock(mutex_);
    for (const Hazard& hazard : hazards) {
      if (!seen_.emplace(kernel, hazard.kind, hazard.sites[0], hazard.sites[1]).second) continue;
      lines_.push_back(hazard.text);
      plugin::log(PORTA_LOG_ERROR, "racecheck: " + hazard.text);
    }
  }
  std::string message = "racecheck: " + std::to_string(hazards.size()) + " hazard" +
                        (hazards.size() == 1 ? "" : "s") +
                        " in this launch; the first: " + hazards.front().text;
  return message;
}

std::string HazardLog::report(size_t& count) const {
  std::lock_guard lock(mutex_);
  std::string text;
  for (const std::string& line : lines_) text += line + "\n";
  count = lines_.size();
  return text;
}

}  // namespace porta::cpu
