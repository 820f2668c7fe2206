// Reads what a launch needs from a SPIR-V module: each kernel's parameters, their kind and size.
// OpenCL's clSetKernelArg and Level Zero's zeKernelSetArgumentValue take a size per argument,
// while porta_kernel_launch hands over only pointers to the values (as cuLaunchKernel does).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace porta::spirv {

enum class ParamKind {
  value,           // passed by value (scalars, vectors, structs passed ByVal)
  global_pointer,  // a pointer to global (or generic) memory: an SVM / USM address
  local_pointer,   // a work-group pointer: the kernel's dynamic shared memory, sized at launch
};

struct Param {
  ParamKind kind;
  uint32_t size;  // bytes of the value (pointers: the device's pointer size)
};

struct KernelSignature {
  std::vector<Param> params;
  // The parameters the caller provides: all but the trailing local pointers, which the build's
  // pass step added for dynamic shared memory.
  size_t user_param_count() const;
  // The bytes of each of those: what porta_kernel_launch checks a launch's arguments against.
  std::vector<uint32_t> user_param_sizes() const;
};

// True when the image starts with the SPIR-V magic number (either byte order).
bool is_spirv(const void* image, size_t size);

// The kernels (entry points) of a module and their signatures. Throws porta::plugin::Failure
// (INVALID_ARGUMENT) naming what is wrong with a malformed module.
std::map<std::string, KernelSignature> read_kernels(const void* image, size_t size);

}  // namespace porta::spirv
