// The CPU vendor op plugin (libporta_ops_vendor_cpu.so): GEMM through OpenBLAS (16-bit inputs
// through oneDNN's matmul), convolution, softmax, ReLU and bias through oneDNN. The ops it leaves
// out (cross-entropy, pooling, the optimisers) run on the portable plugin under PORTA_OPS=vendor.
#include <cblas.h>
#include <omp.h>

#include <cstdio>
#include <exception>
#include <new>
#include <string_view>
#include <utility>

#include "vendor_cpu.h"

namespace porta::vendor_cpu {
namespace {

// The failure of a queued call, per stream, until the stream's next op reports it.
std::mutex failures_mutex;
std::map<porta_stream_t, std::string> failures;

std::mutex threads_mutex;
std::map<porta_device_t, int> device_threads;

// A oneDNN error as a Failure: out of memory, or a backend error naming oneDNN's status.
Failure failure_of(const dnnl::error& e) {
  const porta_status_t status =
      e.status == dnnl_out_of_memory ? PORTA_ERROR_OUT_OF_MEMORY : PORTA_ERROR_BACKEND;
  return Failure(status, std::string("oneDNN: ") + dnnl_status_name(e.status) + ": " + e.what());
}

struct Job {
  porta_stream_t stream;
  std::string op;
  int threads;
  std::function<void()> work;
};

// The host function: runs one job on the stream's worker thread.
void run_job(void* data) {
  std::unique_ptr<Job> job(static_cast<Job*>(data));
  std::string failure;
  try {
    try {
      // OpenMP's thread count is per calling thread: set it on this worker, for oneDNN.
      if (omp_get_max_threads() != job->threads) omp_set_num_threads(job->threads);
      job->work();
    } catch (const dnnl::error& e) {
      throw failure_of(e);
    }
  } catch (...) {
    failure = plugin::error_of_current_exception(job->op.c_str()).message;
  }
  if (failure.empty()) return;
  try {
    plugin::log(PORTA_LOG_ERROR, failure);
    std::lock_guard lock(failures_mutex);
    failures.emplace(job->stream, std::move(failure));  // the first one is kept
  } catch (...) {
    // Out of memory for the record; nothing more can be done on this thread.
  }
}

porta_status_t initialize(porta_backend_context_t* out_context) {
  *out_context = nullptr;
  return PORTA_SUCCESS;
}

void shutdown(porta_backend_context_t) {
  clear_caches();
  {
    std::lock_guard lock(failures_mutex);
    failures.clear();
  }
  std::lock_guard lock(threads_mutex);
  device_threads.clear();
}

// Device memory must be host memory: OpenBLAS and oneDNN read it directly.
porta_status_t supports_backend(porta_backend_context_t, const char* backend) {
  return plugin::guarded("supports_backend", [&]() -> porta_status_t {
    if (std::string_view(backend) == "cpu") return PORTA_SUCCESS;
    return plugin::fail(PORTA_ERROR_UNAVAILABLE,
                        std::string("vendor_cpu serves the cpu backend only, not ") + backend);
  });
}

const porta_ops_interface_t kInterface = {
    .struct_size = sizeof(porta_ops_interface_t),
    .initialize = initialize,
    .shutdown = shutdown,
    .supports_backend = supports_backend,
    .gemm = gemm,
    .conv2d_forward = conv2d_forward,
    .conv2d_backward_data = conv2d_backward_data,
    .conv2d_backward_weights = conv2d_backward_weights,
    .softmax_forward = softmax_forward,
    .softmax_backward = softmax_backward,
    .cross_entropy = nullptr,  // no library op with Porta's label semantics: portable
    .bias_add = bias_add,
    .bias_backward = bias_backward,
    .relu_forward = relu_forward,
    .relu_backward = relu_backward,
    .max_pool2d_forward = nullptr,  // oneDNN's tie rule and workspace differ: portable
    .max_pool2d_backward = nullptr,
    .sgd_update = nullptr,  // no library op: portable
    .adam_update = nullptr,
    .convert = nullptr,          // dtype conversion: portable
    .supports_device = nullptr,  // every device of its backend
};

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

porta_status_t guarded(const char* op, porta_stream_t stream,
                       const std::function<void()>& body) noexcept {
  return plugin::guarded(op, [&] {
    std::string earlier;
    {
      std::lock_guard lock(failures_mutex);
      if (auto it = failures.find(stream); it != failures.end()) {
        earlier = std::move(it->second);
        failures.erase(it);
      }
    }
    if (!earlier.empty()) {
      throw Failure(PORTA_ERROR_BACKEND, "an earlier vendor op on this stream failed: " + earlier);
    }
    try {
      body();
    } catch (const dnnl::error& e) {
      throw failure_of(e);
    }
  });
}

int threads_for(porta_stream_t stream) {
  porta_device_t device = 0;
  porta::check(porta_stream_device(stream, &device));
  {
    std::lock_guard lock(threads_mutex);
    if (auto it = device_threads.find(device); it != device_threads.end()) return it->second;
  }
  const porta_device_properties_t properties = porta::device_properties(device);
  const int threads = properties.compute_units > 0 ? properties.compute_units : 1;
  std::lock_guard lock(threads_mutex);
  device_threads[device] = threads;
  return threads;
}

void enqueue(porta_stream_t stream, const char* op, int threads, std::function<void()> work) {
  auto job = std::make_unique<Job>(Job{stream, op, threads, std::move(work)});
  porta::check(porta_stream_launch_host_func(stream, run_job, job.get()));
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
  return porta::plugin::enter_ops(host, out_plugin,
                                  {.kind = PORTA_PLUGIN_KIND_OPS,
                                   .name = "vendor_cpu",
                                   .version = nullptr,  // from version_text
                                   .backend = nullptr,
                                   .ops = &porta::vendor_cpu::kInterface,
                                   .name_in_errors = false},
                                  porta::vendor_cpu::version_text);
}
