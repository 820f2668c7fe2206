// The OpenCL ICD loader, opened at run time: a table of the functions the backend calls and the
// names of OpenCL's error codes.
#pragma once

#define CL_TARGET_OPENCL_VERSION 300
#include <CL/cl.h>

#include <memory>
#include <string>

namespace porta::opencl {

#define PORTA_CL_FUNCTIONS(X)           \
  X(clGetPlatformIDs)                   \
  X(clGetPlatformInfo)                  \
  X(clGetDeviceIDs)                     \
  X(clGetDeviceInfo)                    \
  X(clCreateContext)                    \
  X(clReleaseContext)                   \
  X(clCreateCommandQueueWithProperties) \
  X(clReleaseCommandQueue)              \
  X(clFlush)                            \
  X(clFinish)                           \
  X(clSVMAlloc)                         \
  X(clSVMFree)                          \
  X(clEnqueueSVMMemcpy)                 \
  X(clEnqueueSVMMemFill)                \
  X(clEnqueueMarkerWithWaitList)        \
  X(clEnqueueBarrierWithWaitList)       \
  X(clWaitForEvents)                    \
  X(clGetEventInfo)                     \
  X(clGetEventProfilingInfo)            \
  X(clRetainEvent)                      \
  X(clReleaseEvent)                     \
  X(clCreateUserEvent)                  \
  X(clSetUserEventStatus)               \
  X(clSetEventCallback)                 \
  X(clCreateProgramWithIL)              \
  X(clCreateProgramWithBinary)          \
  X(clBuildProgram)                     \
  X(clGetProgramBuildInfo)              \
  X(clReleaseProgram)                   \
  X(clCreateKernel)                     \
  X(clReleaseKernel)                    \
  X(clGetKernelArgInfo)                 \
  X(clSetKernelArg)                     \
  X(clSetKernelArgSVMPointer)           \
  X(clSetKernelExecInfo)                \
  X(clEnqueueNDRangeKernel)

class Driver {
 public:
  // Opens libOpenCL.so.1 and resolves every function. Throws Failure: UNAVAILABLE with the
  // dlerror text when there is no loader, INCOMPATIBLE_VERSION naming a missing function (a
  // loader older than OpenCL 2.1).
  static std::unique_ptr<Driver> open();
  // The library stays loaded: ICDs keep threads and exit handlers pointing into it.
  ~Driver() = default;

  // "CL_OUT_OF_RESOURCES (-5)".
  static std::string describe(cl_int error);
  // Throws the Failure for a failed call: "opencl: <what>: <describe(error)>".
  static void check(cl_int error, const std::string& what);

#define PORTA_CL_FIELD(name) decltype(&::name) name = nullptr;
  PORTA_CL_FUNCTIONS(PORTA_CL_FIELD)
#undef PORTA_CL_FIELD

 private:
  Driver() = default;
};

}  // namespace porta::opencl
