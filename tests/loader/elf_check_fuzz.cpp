// porta-elf-check-fuzz: mutates a built shared object where the loader reads it (the ELF header,
// program headers and the dynamic linking sections) and runs each mutated image in a child
// process: porta::elf::check_shared_object first and, only if it accepts the image, dlopen and
// dlsym. A child that a signal ends, or that ld.so ends (an assertion exits 127), is an image the
// check let through but should have refused; each is kept in the output folder, named by offset,
// width and value. Not a CTest test: run it by hand for as long as wanted.
//
//   porta-elf-check-fuzz LIBRARY SYMBOL [MUTATIONS [SEED [OUTPUT-DIR]]]
#include <dlfcn.h>
#include <elf.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "plugin_kit/elf_check.h"

namespace {

struct Region {
  size_t offset, size;
  std::string name;
};

// The bytes worth mutating: what glibc's loader reads before and while relocating.
std::vector<Region> regions(const std::vector<char>& image) {
  Elf64_Ehdr header;
  std::memcpy(&header, image.data(), sizeof(header));
  std::vector<Region> found{
      {0, sizeof(header), "ELF header"},
      {header.e_phoff, header.e_phnum * sizeof(Elf64_Phdr), "program headers"}};
  if (header.e_shoff == 0 || header.e_shstrndx >= header.e_shnum) return found;
  auto section = [&](size_t i) {
    Elf64_Shdr s;
    std::memcpy(&s, image.data() + header.e_shoff + i * sizeof(s), sizeof(s));
    return s;
  };
  const Elf64_Shdr names = section(header.e_shstrndx);
  for (size_t i = 1; i < header.e_shnum; ++i) {
    const Elf64_Shdr s = section(i);
    const std::string name = image.data() + names.sh_offset + s.sh_name;
    const bool dynamic =
        s.sh_type == SHT_DYNAMIC || s.sh_type == SHT_DYNSYM || s.sh_type == SHT_HASH ||
        s.sh_type == SHT_GNU_HASH || s.sh_type == SHT_GNU_versym || s.sh_type == SHT_GNU_verdef ||
        s.sh_type == SHT_GNU_verneed || s.sh_type == SHT_INIT_ARRAY ||
        s.sh_type == SHT_FINI_ARRAY || s.sh_type == SHT_RELR ||
        ((s.sh_type == SHT_RELA || s.sh_type == SHT_REL) && (s.sh_flags & SHF_ALLOC));
    if (dynamic && s.sh_size > 0) found.push_back({s.sh_offset, s.sh_size, name});
  }
  return found;
}

enum class Outcome { refused, dlopen_failed, loaded, crashed };

Outcome run_child(const std::vector<char>& image, const std::string& file, const char* symbol,
                  std::string& detail) {
  fflush(nullptr);
  const pid_t child = fork();
  if (child == 0) {
    alarm(20);  // a hang is a failure too (SIGALRM)
    if (porta::elf::check_shared_object(image.data(), image.size())) _exit(10);
    std::ofstream(file, std::ios::binary).write(image.data(), image.size());
    void* library = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!library) _exit(11);
    dlsym(library, symbol);
    dlclose(library);
    _exit(12);
  }
  int status = 0;
  waitpid(child, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 10) return Outcome::refused;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 11) return Outcome::dlopen_failed;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 12) return Outcome::loaded;
  detail = WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                               : "exit " + std::to_string(WEXITSTATUS(status));
  return Outcome::crashed;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s LIBRARY SYMBOL [MUTATIONS [SEED [OUTPUT-DIR]]]\n", argv[0]);
    return 2;
  }
  const char* symbol = argv[2];
  const long mutations = argc > 3 ? std::atol(argv[3]) : 1000;
  std::mt19937_64 random(argc > 4 ? std::strtoull(argv[4], nullptr, 0) : 1);
  const std::string output = argc > 5 ? argv[5] : ".";
  std::ifstream in(argv[1], std::ios::binary);
  const std::vector<char> original((std::istreambuf_iterator<char>(in)),
                                   std::istreambuf_iterator<char>());
  if (original.size() < sizeof(Elf64_Ehdr) ||
      porta::elf::check_shared_object(original.data(), original.size())) {
    std::fprintf(stderr, "%s: not an image the check accepts\n", argv[1]);
    return 2;
  }
  const std::vector<Region> targets = regions(original);
  char scratch[] = "/tmp/porta-elf-fuzz-XXXXXX";
  if (!mkdtemp(scratch)) return 2;
  const std::string file = std::string(scratch) + "/image.so";

  // Values that cross boundaries: zero, ones, sign and size limits, and the original nudged.
  const uint64_t interesting[] = {0,
                                  1,
                                  2,
                                  0x7f,
                                  0x80,
                                  0xff,
                                  0xffff,
                                  0x7fffffff,
                                  0xffffffff,
                                  0xffffff,
                                  0xfffff,
                                  uint64_t{1} << 40,
                                  ~uint64_t{0},
                                  0x8000000000000000};
  std::map<Outcome, long> counts;
  long crashes = 0;
  for (long n = 0; n < mutations; ++n) {
    std::vector<char> image = original;
    const Region& region = targets[random() % targets.size()];
    const unsigned width = std::vector<unsigned>{1, 1, 2, 4, 8}[random() % 5];
    if (region.size < width) continue;
    size_t at = region.offset + random() % (region.size - width + 1);
    if (width > 1) at -= (at - region.offset) % width;  // fields are aligned in their table
    uint64_t old = 0, value;
    std::memcpy(&old, image.data() + at, width);
    switch (random() % 3) {
      case 0:
        value = interesting[random() % std::size(interesting)];
        break;
      case 1:
        value = old + static_cast<int64_t>(random() % 33) - 16;
        break;
      default:
        value = random();
        break;
    }
    std::memcpy(image.data() + at, &value, width);
    std::string detail;
    const Outcome outcome = run_child(image, file, symbol, detail);
    ++counts[outcome];
    if (outcome == Outcome::crashed) {
      ++crashes;
      char name[160];
      std::snprintf(name, sizeof(name), "%s/crash_%zx_w%u_%llx.so", output.c_str(), at, width,
                    static_cast<unsigned long long>(
                        value & (width == 8 ? ~0ull : (1ull << (8 * width)) - 1)));
      std::ofstream(name, std::ios::binary).write(image.data(), image.size());
      std::printf("crash (%s): %s at %#zx (%s), %u bytes %#llx -> %#llx\n", detail.c_str(), name,
                  at, region.name.c_str(), width, static_cast<unsigned long long>(old),
                  static_cast<unsigned long long>(value));
    }
  }
  std::remove(file.c_str());
  rmdir(scratch);
  std::printf("%ld mutations: %ld refused, %ld refused by dlopen, %ld loaded, %ld crashed\n",
              mutations, counts[Outcome::refused], counts[Outcome::dlopen_failed],
              counts[Outcome::loaded], crashes);
  return crashes == 0 ? 0 : 1;
}
