// The CPU vendor op plugin (libporta_ops_vendor_cpu.so): GEMM through OpenBLAS (16-bit inputs
// through oneDNN's matmul), convolution, softmax, ReLU and bias through oneDNN;
// PORTA_VENDOR_LIBRARY narrows that to one library (porta-bench measures each on its own). The ops
// it leaves out (cross-entropy, pooling, the optimisers) run on the portable plugin under
// PORTA_OPS=vendor.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <new>
#include <string_view>
#include <utility>

#include "vendor_cpu.h"

namespace porta::vendor_cpu {
namespace {

// A oneDNN error as a Failure: out of memory, or a backend error naming oneDNN's status.
Failure failure_of(const dnnl::error& e) {
  const porta_status_t status =
      e.status == dnnl_out_of_memory ? PORTA_ERROR_OUT_OF_MEMORY : PORTA_ERROR_BACKEND;
  return Failure(status, std::string("oneDNN: ") + dnnl_status_name(e.status) + ": " + e.what());
}

struct Job {
  std::string op;
  int threads;
  std::function<void()> work;
};

// The host function: runs one job on the stream's worker thread. A failure is thrown on as a
// Failure with its status: the CPU backend, whose stream runs the job (this plugin serves no
// other), keeps it as the stream's error, which the next synchronize or query returns, as it
// does a failed kernel's.
void run_job(void* data) {
  std::unique_ptr<Job> job(static_cast<Job*>(data));
  try {
    try {
      // OpenMP's thread count is per calling thread: set it on this worker, for oneDNN.
      if (omp_get_max_threads() != job->threads) omp_set_num_threads(job->threads);
      job->work();
    } catch (const dnnl::error& e) {
      throw failure_of(e);
    }
  } catch (...) {
    const plugin::Error error = plugin::error_of_current_exception(job->op.c_str());
    throw Failure(error.status, error.message);
  }
}

}  // namespace

porta_status_t Ops::initialize(void** out_state) {
  *out_state = nullptr;
  return PORTA_SUCCESS;
}

void Ops::shutdown(void*) { clear_caches(); }

// Device memory must be host memory: OpenBLAS and oneDNN read it directly.
porta_status_t Ops::supports_backend(void*, const char* backend) {
  return plugin::guarded("supports_backend", [&]() -> porta_status_t {
    if (std::string_view(backend) == "cpu") return PORTA_SUCCESS;
    return plugin::fail(PORTA_ERROR_UNAVAILABLE,
                        std::string("vendor_cpu serves the cpu backend only, not ") + backend);
  });
}

namespace {

const porta_ops_interface_t kInterface = plugin::ops_interface<Ops>();

// The interface for the libraries PORTA_VENDOR_LIBRARY names (all when unset): the slots of an op
// whose library is left out are NULL, so libporta runs that op portable and the loader report
// lists only what the named libraries implement.
const porta_ops_interface_t* interface_for_settings() {
  const char* setting = plugin::setting("PORTA_VENDOR_LIBRARY");
  static porta_ops_interface_t selected;
  selected = kInterface;
  if (!setting) {
    use_gemm_libraries(GemmLibraries{});
    return &selected;
  }
  // libporta has checked the names; the other plugins' libraries are not this one's business.
  const std::optional<size_t> onednn = plugin::position_in_list(setting, "onednn");
  const std::optional<size_t> openblas = plugin::position_in_list(setting, "openblas");
  use_gemm_libraries({.openblas = openblas.has_value(),
                      .onednn = onednn.has_value(),
                      .prefer_onednn = onednn && (!openblas || *onednn < *openblas)});
  if (!onednn) {
    selected.conv2d_forward = nullptr;
    selected.conv2d_backward_data = nullptr;
    selected.conv2d_backward_weights = nullptr;
    selected.softmax_forward = nullptr;
    selected.softmax_backward = nullptr;
    selected.bias_add = nullptr;
    selected.bias_backward = nullptr;
    selected.relu_forward = nullptr;
    selected.relu_backward = nullptr;
    if (!openblas) selected.gemm = nullptr;
  }
  return &selected;
}

std::string version_text() {
  // "vendor_cpu 0.1.0 (oneDNN 2.6.3, OpenBLAS 0.3.21 DYNAMIC_ARCH ... SkylakeX MAX_THREADS=64)"
  std::string blas = openblas_get_config();
  while (!blas.empty() && blas.back() == ' ') blas.pop_back();
  char text[256];
  std::snprintf(text, sizeof text, "vendor_cpu %d.%d.%d (oneDNN %s, %s)", PORTA_VERSION_MAJOR,
                PORTA_VERSION_MINOR, PORTA_VERSION_PATCH, dnnl_version_text().c_str(),
                blas.c_str());
  return text;
}

}  // namespace

std::string dnnl_version_text() {
  const dnnl_version_t* v = dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

const char* dnnl_status_name(dnnl_status_t status) {
  switch (status) {
    case dnnl_success:
      return "dnnl_success";
    case dnnl_out_of_memory:
      return "dnnl_out_of_memory";
    case dnnl_invalid_arguments:
      return "dnnl_invalid_arguments";
    case dnnl_unimplemented:
      return "dnnl_unimplemented";
    case dnnl_iterator_ends:
      return "dnnl_iterator_ends";
    case dnnl_runtime_error:
      return "dnnl_runtime_error";
    case dnnl_not_required:
      return "dnnl_not_required";
    default:
      return "dnnl status (unknown)";
  }
}

porta_status_t guarded(const char* op, const std::function<void()>& body) noexcept {
  return plugin::guarded(op, [&] {
    try {
      body();
    } catch (const dnnl::error& e) {
      throw failure_of(e);
    }
  });
}

void check_32_bit(const char* library,
                  std::initializer_list<std::pair<const char*, int64_t>> values) {
  for (const auto& [name, value] : values) {
    if (value > INT32_MAX) {
      throw Failure(PORTA_ERROR_UNSUPPORTED, std::string(name) + " is " + std::to_string(value) +
                                                 "; " + library + " takes 32-bit values (at most " +
                                                 std::to_string(INT32_MAX) + ")");
    }
  }
}

int threads_for(const Op& context) {
  return context.properties->compute_units > 0 ? context.properties->compute_units : 1;
}

void enqueue(const Op& context, const char* op, int threads, std::function<void()> work) {
  auto job = std::make_unique<Job>(Job{op, threads, std::move(work)});
  porta::check(porta_stream_launch_host_func(context.stream, run_job, job.get()));
  job.release();  // run_job owns it now
}

const dnnl::engine& engine() {
  static const dnnl::engine* cpu = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *cpu;
}

dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::memory::data_type dnnl_type(porta_dtype_t dtype) {
  switch (dtype) {
    case PORTA_DTYPE_F16:
      return dnnl::memory::data_type::f16;
    case PORTA_DTYPE_BF16:
      return dnnl::memory::data_type::bf16;
    default:
      return dnnl::memory::data_type::f32;
  }
}

const char* dtype_name(porta_dtype_t dtype) {
  switch (dtype) {
    case PORTA_DTYPE_F16:
      return "f16";
    case PORTA_DTYPE_BF16:
      return "bf16";
    default:
      return "f32";
  }
}

void clear_caches() {
  clear_gemm_cache();
  clear_conv_cache();
  clear_dnnl_ops_cache();
}

}  // namespace porta::vendor_cpu

extern "C" PORTA_PLUGIN_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                                                 porta_plugin_t* out_plugin) {
  const porta::plugin::Description description{.kind = PORTA_PLUGIN_KIND_OPS,
                                               .name = "vendor_cpu",
                                               .version = nullptr,  // from version_text
                                               .backend = nullptr,
                                               .ops = &porta::vendor_cpu::kInterface,
                                               .name_in_errors = false};
  const porta_status_t status =
      porta::plugin::enter_ops(host, out_plugin, description, porta::vendor_cpu::version_text);
  if (status != PORTA_SUCCESS) return status;
  // The host API is kept now, and with it the settings.
  out_plugin->ops = porta::vendor_cpu::interface_for_settings();
  return PORTA_SUCCESS;
}
