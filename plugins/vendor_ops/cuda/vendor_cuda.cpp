// The CUDA vendor op plugin (libporta_ops_vendor_cuda.so): GEMM through cuBLAS
// (cublasGemmStridedBatchedEx, fp32 accumulation, no TF32), convolution and softmax through
// cuDNN's (legacy, still present in cuDNN 9) convolution and softmax API. Everything is queued on
// the CUDA stream behind the Porta stream (porta_stream_native_handle: a CUstream, which is a
// cudaStream_t), so it runs in stream order with Porta's own kernels, copies and events.
//
// Each Porta stream gets its own cuBLAS and cuDNN handles, bound to its CUDA stream once, and its
// own cuDNN workspace in Porta memory, kept in the stream's storage (porta_op_context_t): work on
// different streams never shares a workspace, no handle's stream is switched while another thread
// uses it, and libporta hands the storage back when the stream is destroyed. The device's context
// (the primary context, the op context's native_device) is made current around every library
// call and the caller's restored afterwards. The ops it leaves out run on the portable plugin.
#include <cublas_v2.h>
#include <cuda.h>
#include <cudnn.h>
#include <porta/porta_ops.h>
#include <porta/porta_plugin.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <porta/porta.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "conv_algorithms.h"
#include "gpu_driver.h"
#include "op_plugin.h"
#include "plugin_kit.h"

namespace porta::vendor_cuda {
namespace {

using plugin::fail;
using plugin::Failure;
using plugin::guarded;
using plugin::throw_error;

void check_blas(cublasStatus_t status, const char* call) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  const porta_status_t mapped = status == CUBLAS_STATUS_ALLOC_FAILED    ? PORTA_ERROR_OUT_OF_MEMORY
                                : status == CUBLAS_STATUS_NOT_SUPPORTED ? PORTA_ERROR_UNSUPPORTED
                                                                        : PORTA_ERROR_BACKEND;
  throw Failure(mapped, std::string(call) + " failed: " + cublasGetStatusName(status) + " (" +
                            std::to_string(static_cast<int>(status)) + ")");
}

void check_dnn(cudnnStatus_t status, const char* call) {
  if (status == CUDNN_STATUS_SUCCESS) return;
  // cuDNN 9 groups its codes by thousands: 3xxx not supported, 4004 device allocation.
  const int code = static_cast<int>(status);
  const porta_status_t mapped = code == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED ||
                                        code == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED
                                    ? PORTA_ERROR_OUT_OF_MEMORY
                                : code / 1000 == CUDNN_STATUS_NOT_SUPPORTED / 1000
                                    ? PORTA_ERROR_UNSUPPORTED
                                    : PORTA_ERROR_BACKEND;
  throw Failure(mapped, std::string(call) + " failed: " + cudnnGetErrorString(status) + " (" +
                            std::to_string(code) + ")");
}

// libcuda.so.1, opened and resolved as the backend opens it (gpu_driver.h), at initialisation;
// the plugin itself links only cuBLAS and cuDNN. Never closed, like the backend's: drivers keep
// threads and exit handlers in it.
std::unique_ptr<gpu::Driver> driver;

// The device's context current around library calls, by the backend's one rule (gpu_driver.h).
class CurrentContext : public gpu::CurrentContext {
 public:
  explicit CurrentContext(CUcontext context) : gpu::CurrentContext(*driver, context) {}
};

// Destroys a state's library handles. Each is first bound to the default stream: destroying a
// handle synchronises with its stream, which may be on its way out.
struct StreamState;
void release(StreamState& state);

// What one Porta stream needs (its storage): its CUDA stream, its device's context, its library
// handles bound to that stream, and its cuDNN workspace.
struct StreamState {
  std::mutex mutex;  // held while a call uses the handles or the workspace
  porta_device_t device = 0;
  CUcontext context = nullptr;
  cudaStream_t native = nullptr;
  cublasHandle_t blas = nullptr;
  cudnnHandle_t dnn = nullptr;
  void* workspace = nullptr;
  size_t workspace_size = 0;

  StreamState() = default;
  StreamState(const StreamState&) = delete;
  StreamState& operator=(const StreamState&) = delete;
  ~StreamState() {
    try {
      release(*this);
    } catch (...) {
      // A context that cannot be made current: its handles go with the process.
    }
  }
};

void release(StreamState& state) {
  if (!state.blas && !state.dnn) return;
  CurrentContext current(state.context);
  if (state.blas) {
    cublasSetStream(state.blas, nullptr);
    cublasDestroy(state.blas);
  }
  if (state.dnn) {
    cudnnSetStream(state.dnn, nullptr);
    cudnnDestroy(state.dnn);
  }
  state.blas = nullptr;
  state.dnn = nullptr;
}

// A new state for the op's stream: the device's context and the CUDA stream libporta resolved,
// and library handles bound to it.
std::unique_ptr<StreamState> make_state(const porta_op_context_t& op) {
  if (!op.native_device || !op.native_stream) {
    throw Failure(PORTA_ERROR_BACKEND, "the CUDA backend gave no native context or stream");
  }
  auto state = std::make_unique<StreamState>();
  state->device = op.device;
  state->context = static_cast<CUcontext>(op.native_device);
  state->native = static_cast<cudaStream_t>(op.native_stream);  // a CUstream is a cudaStream_t
  CurrentContext current(state->context);
  check_blas(cublasCreate(&state->blas), "cublasCreate");
  check_blas(cublasSetStream(state->blas, state->native), "cublasSetStream");
  // Exact fp32 products: CUBLAS_COMPUTE_32F without the TF32 math mode never rounds inputs.
  check_blas(cublasSetMathMode(state->blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  check_dnn(cudnnCreate(&state->dnn), "cudnnCreate");
  check_dnn(cudnnSetStream(state->dnn, state->native), "cudnnSetStream");
  return state;  // on a throw above, ~StreamState releases what was made
}

// The state of the op's stream, made on its first use.
StreamState& state_of(const porta_op_context_t& op) {
  return plugin::stream_storage<StreamState>(op, [&] { return make_state(op); });
}

// At least bytes of the stream's workspace (state.mutex held). Growing frees the old buffer after
// the device's queued work, which porta_memory_free waits for.
void* workspace(StreamState& state, size_t bytes) {
  if (bytes == 0) return nullptr;
  if (state.workspace_size < bytes) {
    void* grown = nullptr;
    porta::check(porta_memory_alloc(state.device, bytes, &grown));
    if (state.workspace) porta::check(porta_memory_free(state.workspace));
    state.workspace = grown;
    state.workspace_size = bytes;
  }
  return state.workspace;
}

int to_int(const char* name, int64_t value) {
  if (value > INT_MAX) {
    throw Failure(PORTA_ERROR_UNSUPPORTED, std::string(name) + " is " + std::to_string(value) +
                                               "; the library takes 32-bit sizes");
  }
  return static_cast<int>(value);
}

// ---- GEMM ---------------------------------------------------------------------------------------

porta_status_t gemm(const porta_op_context_t* op, const porta_gemm_args_t* args) {
  return guarded("porta_gemm", [&] {
    const porta_gemm_desc_t* d = args->desc;
    const void *a = args->a, *b = args->b;
    float* c = args->c;
    cudaDataType_t type = CUDA_R_32F;
    if (d->dtype == PORTA_DTYPE_F16) type = CUDA_R_16F;
    if (d->dtype == PORTA_DTYPE_BF16) type = CUDA_R_16BF;
    StreamState& state = state_of(*op);
    std::lock_guard lock(state.mutex);
    CurrentContext current(state.context);
    // cuBLAS is column-major: row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T,
    // so B goes first and m and n swap; the leading dimensions stay as they are.
    const cublasOperation_t op_a = d->trans_a == PORTA_TRANSPOSE ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = d->trans_b == PORTA_TRANSPOSE ? CUBLAS_OP_T : CUBLAS_OP_N;
    check_blas(
        cublasGemmStridedBatchedEx(
            state.blas, op_b, op_a, to_int("n", d->n), to_int("m", d->m), to_int("k", d->k),
            &d->alpha, b, type, to_int("ldb", d->ldb), d->stride_b, a, type, to_int("lda", d->lda),
            d->stride_a, &d->beta, c, CUDA_R_32F, to_int("ldc", d->ldc), d->stride_c,
            to_int("batch_count", d->batch_count), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmStridedBatchedEx");
  });
}

// ---- convolution --------------------------------------------------------------------------------

enum class Pass { kForward, kBackwardData, kBackwardWeights };

// cuDNN's descriptors for one convolution, and the algorithm chosen for each pass (cached per
// descriptor: the heuristics are queried once).
struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  int algo = -1;
  cudnnMathType_t math = CUDNN_FMA_MATH;
  size_t workspace = 0;

  ConvPlan() = default;
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;
  ~ConvPlan() {
    if (x) cudnnDestroyTensorDescriptor(x);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
  }
};

std::mutex plans_mutex;
std::map<std::vector<int64_t>, std::shared_ptr<ConvPlan>> plans;

// The heuristics' best algorithm among those that meet the op tests' fp32 bound
// (conv_algorithms.h); it runs in CUDNN_FMA_MATH, never in the default math, which allows TF32.
template <class Perf>
void choose(ConvPlan& plan, const Perf* perf, int count, const char* pass) {
  const Perf* chosen = choose_exact(perf, count);
  if (!chosen) {
    throw Failure(PORTA_ERROR_UNSUPPORTED,
                  std::string("cuDNN offers no exact-product fp32 algorithm for this ") + pass +
                      " (FFT, Winograd and tensor-op math are not used)");
  }
  plan.algo = static_cast<int>(chosen->algo);
  plan.math = CUDNN_FMA_MATH;
}

std::shared_ptr<ConvPlan> plan_for(StreamState& state, const porta_conv2d_desc_t& d, Pass pass) {
  const std::vector<int64_t> key = {static_cast<int64_t>(pass),
                                    d.batch,
                                    d.in_channels,
                                    d.in_height,
                                    d.in_width,
                                    d.out_channels,
                                    d.kernel_height,
                                    d.kernel_width,
                                    d.pad_h,
                                    d.pad_w,
                                    d.stride_h,
                                    d.stride_w,
                                    d.dilation_h,
                                    d.dilation_w,
                                    state.device};
  {
    std::lock_guard lock(plans_mutex);
    if (auto it = plans.find(key); it != plans.end()) return it->second;
  }
  auto plan = std::make_shared<ConvPlan>();
  const int n = to_int("batch", d.batch), c = to_int("in_channels", d.in_channels);
  const int h = to_int("in_height", d.in_height), w = to_int("in_width", d.in_width);
  const int k = to_int("out_channels", d.out_channels);
  const int r = to_int("kernel_height", d.kernel_height),
            s = to_int("kernel_width", d.kernel_width);
  check_dnn(cudnnCreateTensorDescriptor(&plan->x), "cudnnCreateTensorDescriptor");
  check_dnn(cudnnCreateTensorDescriptor(&plan->y), "cudnnCreateTensorDescriptor");
  check_dnn(cudnnCreateFilterDescriptor(&plan->w), "cudnnCreateFilterDescriptor");
  check_dnn(cudnnCreateConvolutionDescriptor(&plan->conv), "cudnnCreateConvolutionDescriptor");
  check_dnn(cudnnSetTensor4dDescriptor(plan->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, c, h, w),
            "cudnnSetTensor4dDescriptor(x)");
  check_dnn(cudnnSetFilter4dDescriptor(plan->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, k, c, r, s),
            "cudnnSetFilter4dDescriptor(w)");
  check_dnn(cudnnSetConvolution2dDescriptor(
                plan->conv, to_int("pad_h", d.pad_h), to_int("pad_w", d.pad_w),
                to_int("stride_h", d.stride_h), to_int("stride_w", d.stride_w),
                to_int("dilation_h", d.dilation_h), to_int("dilation_w", d.dilation_w),
                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
            "cudnnSetConvolution2dDescriptor");
  check_dnn(cudnnSetConvolutionMathType(plan->conv, CUDNN_FMA_MATH), "cudnnSetConvolutionMathType");
  int yn, yc, yh, yw;
  check_dnn(cudnnGetConvolution2dForwardOutputDim(plan->conv, plan->x, plan->w, &yn, &yc, &yh, &yw),
            "cudnnGetConvolution2dForwardOutputDim");
  check_dnn(
      cudnnSetTensor4dDescriptor(plan->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, yn, yc, yh, yw),
      "cudnnSetTensor4dDescriptor(y)");

  constexpr int kWanted = 16;
  int returned = 0;
  switch (pass) {
    case Pass::kForward: {
      cudnnConvolutionFwdAlgoPerf_t perf[kWanted];
      check_dnn(cudnnGetConvolutionForwardAlgorithm_v7(state.dnn, plan->x, plan->w, plan->conv,
                                                       plan->y, kWanted, &returned, perf),
                "cudnnGetConvolutionForwardAlgorithm_v7");
      choose(*plan, perf, returned, "convolution forward");
      check_dnn(cudnnSetConvolutionMathType(plan->conv, plan->math), "cudnnSetConvolutionMathType");
      check_dnn(cudnnGetConvolutionForwardWorkspaceSize(
                    state.dnn, plan->x, plan->w, plan->conv, plan->y,
                    static_cast<cudnnConvolutionFwdAlgo_t>(plan->algo), &plan->workspace),
                "cudnnGetConvolutionForwardWorkspaceSize");
      break;
    }
    case Pass::kBackwardData: {
      cudnnConvolutionBwdDataAlgoPerf_t perf[kWanted];
      check_dnn(cudnnGetConvolutionBackwardDataAlgorithm_v7(state.dnn, plan->w, plan->y, plan->conv,
                                                            plan->x, kWanted, &returned, perf),
                "cudnnGetConvolutionBackwardDataAlgorithm_v7");
      choose(*plan, perf, returned, "convolution backward-data");
      check_dnn(cudnnSetConvolutionMathType(plan->conv, plan->math), "cudnnSetConvolutionMathType");
      check_dnn(cudnnGetConvolutionBackwardDataWorkspaceSize(
                    state.dnn, plan->w, plan->y, plan->conv, plan->x,
                    static_cast<cudnnConvolutionBwdDataAlgo_t>(plan->algo), &plan->workspace),
                "cudnnGetConvolutionBackwardDataWorkspaceSize");
      break;
    }
    case Pass::kBackwardWeights: {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[kWanted];
      check_dnn(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                    state.dnn, plan->x, plan->y, plan->conv, plan->w, kWanted, &returned, perf),
                "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
      choose(*plan, perf, returned, "convolution backward-weights");
      check_dnn(cudnnSetConvolutionMathType(plan->conv, plan->math), "cudnnSetConvolutionMathType");
      check_dnn(cudnnGetConvolutionBackwardFilterWorkspaceSize(
                    state.dnn, plan->x, plan->y, plan->conv, plan->w,
                    static_cast<cudnnConvolutionBwdFilterAlgo_t>(plan->algo), &plan->workspace),
                "cudnnGetConvolutionBackwardFilterWorkspaceSize");
      break;
    }
  }
  std::lock_guard lock(plans_mutex);
  return plans.emplace(key, std::move(plan)).first->second;  // another thread's if it won
}

porta_status_t conv(const char* name, Pass pass, const porta_op_context_t& op,
                    const porta_conv2d_desc_t* d, const void* in0, const void* in1, float* out) {
  return guarded(name, [&] {
    // cuDNN's convolution wants x, w and y of one type; Porta's 16-bit convolutions write fp32.
    if (d->dtype != PORTA_DTYPE_F32) {
      throw Failure(PORTA_ERROR_UNSUPPORTED,
                    "cuDNN's convolution takes x, w and y of one data type; f16 and bf16 inputs "
                    "with an fp32 output are not among its configurations");
    }
    StreamState& state = state_of(op);
    std::lock_guard lock(state.mutex);
    CurrentContext current(state.context);
    std::shared_ptr<ConvPlan> plan = plan_for(state, *d, pass);
    void* space = workspace(state, plan->workspace);
    const float one = 1.0f, zero = 0.0f;
    switch (pass) {
      case Pass::kForward:
        check_dnn(cudnnConvolutionForward(state.dnn, &one, plan->x, in0, plan->w, in1, plan->conv,
                                          static_cast<cudnnConvolutionFwdAlgo_t>(plan->algo), space,
                                          plan->workspace, &zero, plan->y, out),
                  "cudnnConvolutionForward");
        break;
      case Pass::kBackwardData:
        check_dnn(
            cudnnConvolutionBackwardData(state.dnn, &one, plan->w, in1, plan->y, in0, plan->conv,
                                         static_cast<cudnnConvolutionBwdDataAlgo_t>(plan->algo),
                                         space, plan->workspace, &zero, plan->x, out),
            "cudnnConvolutionBackwardData");
        break;
      case Pass::kBackwardWeights:
        check_dnn(
            cudnnConvolutionBackwardFilter(state.dnn, &one, plan->x, in0, plan->y, in1, plan->conv,
                                           static_cast<cudnnConvolutionBwdFilterAlgo_t>(plan->algo),
                                           space, plan->workspace, &zero, plan->w, out),
            "cudnnConvolutionBackwardFilter");
        break;
    }
  });
}

porta_status_t conv2d_forward(const porta_op_context_t* op, const porta_conv2d_forward_args_t* a) {
  return conv("porta_conv2d_forward", Pass::kForward, *op, a->desc, a->x, a->w, a->y);
}

porta_status_t conv2d_backward_data(const porta_op_context_t* op,
                                    const porta_conv2d_backward_data_args_t* a) {
  return conv("porta_conv2d_backward_data", Pass::kBackwardData, *op, a->desc, a->dy, a->w, a->dx);
}

porta_status_t conv2d_backward_weights(const porta_op_context_t* op,
                                       const porta_conv2d_backward_weights_args_t* a) {
  return conv("porta_conv2d_backward_weights", Pass::kBackwardWeights, *op, a->desc, a->x, a->dy,
              a->dw);
}

// ---- softmax ------------------------------------------------------------------------------------

// A rows x cols matrix as cuDNN's N x C x 1 x 1 tensor, softmax over C per row (instance mode).
struct RowsDescriptor {
  cudnnTensorDescriptor_t desc = nullptr;
  RowsDescriptor(int64_t rows, int64_t cols) {
    const int n = to_int("rows", rows), c = to_int("cols", cols);
    check_dnn(cudnnCreateTensorDescriptor(&desc), "cudnnCreateTensorDescriptor");
    const cudnnStatus_t status =
        cudnnSetTensor4dDescriptor(desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, c, 1, 1);
    if (status != CUDNN_STATUS_SUCCESS) cudnnDestroyTensorDescriptor(desc);
    check_dnn(status, "cudnnSetTensor4dDescriptor");
  }
  ~RowsDescriptor() { cudnnDestroyTensorDescriptor(desc); }
  RowsDescriptor(const RowsDescriptor&) = delete;
  RowsDescriptor& operator=(const RowsDescriptor&) = delete;
};

cudnnSoftmaxAlgorithm_t algorithm(porta_softmax_mode_t mode) {
  return mode == PORTA_LOG_SOFTMAX ? CUDNN_SOFTMAX_LOG : CUDNN_SOFTMAX_ACCURATE;
}

porta_status_t softmax_forward(const porta_op_context_t* op,
                               const porta_softmax_forward_args_t* a) {
  return guarded("porta_softmax_forward", [&] {
    StreamState& state = state_of(*op);
    std::lock_guard lock(state.mutex);
    CurrentContext current(state.context);
    RowsDescriptor desc(a->rows, a->cols);
    const float one = 1.0f, zero = 0.0f;
    check_dnn(cudnnSoftmaxForward(state.dnn, algorithm(a->mode), CUDNN_SOFTMAX_MODE_INSTANCE, &one,
                                  desc.desc, a->x, &zero, desc.desc, a->y),
              "cudnnSoftmaxForward");
  });
}

porta_status_t softmax_backward(const porta_op_context_t* op,
                                const porta_softmax_backward_args_t* a) {
  return guarded("porta_softmax_backward", [&] {
    StreamState& state = state_of(*op);
    std::lock_guard lock(state.mutex);
    CurrentContext current(state.context);
    RowsDescriptor desc(a->rows, a->cols);
    const float one = 1.0f, zero = 0.0f;
    check_dnn(cudnnSoftmaxBackward(state.dnn, algorithm(a->mode), CUDNN_SOFTMAX_MODE_INSTANCE, &one,
                                   desc.desc, a->y, desc.desc, a->dy, &zero, desc.desc, a->dx),
              "cudnnSoftmaxBackward");
  });
}

// ---- the plugin ---------------------------------------------------------------------------------

// "13.0" from the CUDA version encoding (13000).
std::string cuda_version_text(size_t version) {
  return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}

// Without the driver there are no CUDA devices, and nothing for this plugin to do. A driver older
// than the CUDA major version cuBLAS and cuDNN were built for cannot run them (cublasCreate would
// fail without saying why): that is said here, naming both versions.
porta_status_t initialize(void** out_state) {
  *out_state = nullptr;
  return guarded("vendor_cuda", [&]() -> porta_status_t {
    if (!driver) driver = gpu::Driver::open();
    int driver_version = 0;
    if (driver->driver_get_version(&driver_version) != CUDA_SUCCESS) driver_version = 0;
    const size_t needed = std::max(cublasGetCudartVersion(), cudnnGetCudartVersion());
    if (static_cast<size_t>(driver_version) / 1000 < needed / 1000) {
      throw_error(PORTA_ERROR_INCOMPATIBLE_VERSION,
                  "cuBLAS and cuDNN were built for CUDA " + cuda_version_text(needed) +
                      ", which needs a driver for CUDA " + cuda_version_text(needed / 1000 * 1000) +
                      " or later; the driver supports CUDA " + cuda_version_text(driver_version) +
                      " (" + std::to_string(driver_version) + ")");
    }
    return PORTA_SUCCESS;
  });
}

// A stream's state, handed back by libporta: its library handles are released (~StreamState),
// and its workspace freed unless libporta is shutting down, which frees all Porta memory itself.
void release_stream_storage(void*, void* storage, int32_t shutting_down) {
  std::unique_ptr<StreamState> state(static_cast<StreamState*>(storage));
  if (!shutting_down && state->workspace) porta_memory_free(state->workspace);
}

// libporta has handed back every stream's state before; the descriptors are released here.
void shutdown(void*) {
  std::lock_guard lock(plans_mutex);
  plans.clear();
  // The driver stays open (see initialize); the next initialize finds it again.
}

porta_status_t supports_backend(void*, const char* backend) {
  return plugin::guarded("supports_backend", [&]() -> porta_status_t {
    if (std::string_view(backend) == "cuda") return PORTA_SUCCESS;
    return fail(PORTA_ERROR_UNAVAILABLE,
                std::string("vendor_cuda serves the cuda backend only, not ") + backend);
  });
}

// The slots, for plugin::ops_interface; the ops left out run on the portable plugin.
struct Ops {
  static constexpr auto initialize = vendor_cuda::initialize;
  static constexpr auto shutdown = vendor_cuda::shutdown;
  static constexpr auto supports_backend = vendor_cuda::supports_backend;
  static constexpr auto release_stream_storage = vendor_cuda::release_stream_storage;
  static constexpr auto gemm = vendor_cuda::gemm;
  static constexpr auto conv2d_forward = vendor_cuda::conv2d_forward;
  static constexpr auto conv2d_backward_data = vendor_cuda::conv2d_backward_data;
  static constexpr auto conv2d_backward_weights = vendor_cuda::conv2d_backward_weights;
  static constexpr auto softmax_forward = vendor_cuda::softmax_forward;
  static constexpr auto softmax_backward = vendor_cuda::softmax_backward;
};

const porta_ops_interface_t kInterface = plugin::ops_interface<Ops>();

// The interface for the libraries PORTA_VENDOR_LIBRARY names (all when unset): GEMM is cuBLAS's,
// convolution and softmax cuDNN's; the slots of a library left out are NULL (run portable).
const porta_ops_interface_t* interface_for_settings() {
  static porta_ops_interface_t selected;
  selected = kInterface;
  const char* setting = plugin::setting("PORTA_VENDOR_LIBRARY");
  if (!setting) return &selected;
  // libporta has checked the names.
  if (!plugin::position_in_list(setting, "cublas")) selected.gemm = nullptr;
  if (!plugin::position_in_list(setting, "cudnn")) {
    selected.conv2d_forward = nullptr;
    selected.conv2d_backward_data = nullptr;
    selected.conv2d_backward_weights = nullptr;
    selected.softmax_forward = nullptr;
    selected.softmax_backward = nullptr;
  }
  return &selected;
}

// "vendor_cuda 0.1.0 (cuBLAS 13.0.2, cuDNN 9.19.0)": the libraries loaded, not the headers.
std::string version_text() {
  int major = 0, minor = 0, patch = 0;
  cublasGetProperty(MAJOR_VERSION, &major);
  cublasGetProperty(MINOR_VERSION, &minor);
  cublasGetProperty(PATCH_LEVEL, &patch);
  const size_t dnn = cudnnGetVersion();  // major * 10000 + minor * 100 + patch since cuDNN 9
  char text[256];
  std::snprintf(text, sizeof text, "vendor_cuda %d.%d.%d (cuBLAS %d.%d.%d, cuDNN %zu.%zu.%zu)",
                PORTA_VERSION_MAJOR, PORTA_VERSION_MINOR, PORTA_VERSION_PATCH, major, minor, patch,
                dnn / 10000, dnn / 100 % 100, dnn % 100);
  return text;
}

}  // namespace
}  // namespace porta::vendor_cuda

extern "C" PORTA_PLUGIN_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                                                 porta_plugin_t* out_plugin) {
  const porta::plugin::Description description{.kind = PORTA_PLUGIN_KIND_OPS,
                                               .name = "vendor_cuda",
                                               .version = nullptr,  // from version_text
                                               .backend = nullptr,
                                               .ops = &porta::vendor_cuda::kInterface,
                                               .name_in_errors = false};
  const porta_status_t status =
      porta::plugin::enter_ops(host, out_plugin, description, porta::vendor_cuda::version_text);
  if (status != PORTA_SUCCESS) return status;
  // The host API is kept now, and with it the settings.
  out_plugin->ops = porta::vendor_cuda::interface_for_settings();
  return PORTA_SUCCESS;
}
