// Running a test's body in a child process whose address space is limited: running out of memory
// for real, in one place, without the allocation-failure injector's every-point walk. No Catch
// checks in the child: it says on stderr what went wrong and returns false.
#pragma once

#include <malloc.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <string>

namespace porta_test {

// Limits the address space to what the process has mapped plus `more` bytes (the soft limit
// only, so that lift_address_space_limit can raise it again).
inline bool limit_address_space(size_t more) {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0;
  if (!(statm >> pages)) return false;
  rlimit limit{};
  if (getrlimit(RLIMIT_AS, &limit) != 0) return false;
  limit.rlim_cur = pages * size_t(sysconf(_SC_PAGESIZE)) + more;
  return setrlimit(RLIMIT_AS, &limit) == 0;
}

inline bool lift_address_space_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_AS, &limit) != 0) return false;
  limit.rlim_cur = limit.rlim_max;
  return setrlimit(RLIMIT_AS, &limit) == 0;
}

// Prints what unless condition holds; returns condition.
inline bool expect(bool condition, const std::string& what) {
  if (!condition) std::fprintf(stderr, "%s\n", what.c_str());
  return condition;
}

// Runs body in a child process; true where it returned true and the process ended normally. The
// child's threads share one malloc arena (a thread's own would reserve 64 MiB of address space
// when it first allocates, whenever that is, and take what a limit leaves), and large blocks are
// always mapped and unmapped (else a freed one stays in the heap, and the next one needs no new
// address space).
template <typename Body>
bool in_child(Body&& body) {
  std::fflush(nullptr);
  const pid_t child = fork();
  if (child == 0) {
    mallopt(M_ARENA_MAX, 1);
    mallopt(M_MMAP_THRESHOLD, 128 << 10);
    _exit(body() ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  INFO("the child's wait status: " << status);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace porta_test
