/*
 * porta.hpp: header-only C++17 RAII wrappers over the Porta C API (porta.h).
 *
 * Never part of the ABI: everything here is inline and calls only the C functions, so it works
 * with any libporta of the same major version. Errors become exceptions: every wrapper throws
 * porta::error (status + porta_last_error_message()) where the C call returns an error code;
 * PORTA_NOT_READY is not an error and comes back as `false` from the query() members.
 *
 * Ownership: stream, event, module, device_buffer and pinned_buffer are move-only and release
 * what they own in their destructors (errors there are ignored, as destructors must not throw).
 * A kernel is a plain value that lives as long as its module. A default-constructed stream is
 * the default stream of the default device (the C API's NULL stream).
 * Thread-safety: that of the C API; one wrapper object must not be moved or destroyed while
 * another thread uses it.
 *
 *   porta::init();
 *   porta::stream s(0);
 *   porta::device_buffer<float> x(0, n), y(0, n);
 *   x.copy_from_host(hx.data(), n);
 *   porta::module m(0, "saxpy.so");
 *   auto saxpy = m.kernel<uint32_t, float, const float*, float*>("saxpy");  // as PORTA_KERNEL
 *   saxpy.launch(s, porta::div_up(n, 256), 256, uint32_t(n), 2.0f, x, y);
 *   s.synchronize();
 */
#ifndef PORTA_PORTA_HPP_
#define PORTA_PORTA_HPP_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "porta.h"

namespace porta {

/* ---- Errors -------------------------------------------------------------------------------- */

class error : public std::runtime_error {
 public:
  // Takes the calling thread's last error message: construct it right after the failing call.
  explicit error(porta_status_t status) : error(status, porta_last_error_message()) {}
  error(porta_status_t status, const std::string& message)
      : std::runtime_error(std::string(porta_status_name(status)) +
                           (message.empty() ? "" : ": " + message)),
        status_(status),
        message_(message) {}
  porta_status_t status() const noexcept { return status_; }
  const std::string& message() const noexcept { return message_; }  // without the status name

 private:
  porta_status_t status_;
  std::string message_;
};

// Throws porta::error for any status but PORTA_SUCCESS and PORTA_NOT_READY.
inline void check(porta_status_t status) {
  if (status != PORTA_SUCCESS && status != PORTA_NOT_READY) throw error(status);
}

namespace detail {
// Calls f(args..., &out), checks its status and returns out.
template <class Out, class F, class... Args>
Out out(F f, Args... args) {
  Out value{};
  check(f(args..., &value));
  return value;
}
}  // namespace detail

/* ---- Runtime, loader and devices ----------------------------------------------------------- */

// porta_init; options NULL reads the environment. Idempotent, as porta_init is.
inline void init(const porta_init_options_t* options = nullptr) { check(porta_init(options)); }

inline std::string selected_backend() { return detail::out<const char*>(porta_backend_selected); }

// Every row of the loader report, in the order tried; readable after a failed init.
inline std::vector<porta_plugin_report_t> loader_report() {
  std::vector<porta_plugin_report_t> rows(detail::out<size_t>(porta_loader_report_count));
  for (size_t i = 0; i < rows.size(); ++i) {
    rows[i].struct_size = sizeof(porta_plugin_report_t);
    check(porta_loader_report_get(i, &rows[i]));
  }
  return rows;
}

// "loaded", "not found", ... for a loader report row.
inline const char* to_string(porta_plugin_outcome_t outcome) noexcept {
  static const char* const names[] = {"loaded",      "not found",    "load failed",
                                      "no entry",    "incompatible", "init failed",
                                      "unavailable", "not requested"};
  return static_cast<size_t>(outcome) < std::size(names) ? names[outcome] : "unknown";
}

// The names of the PORTA_CAPABILITY_* bits set ("fp64", "bf16", ...); unknown bits as hex.
inline std::vector<std::string> capability_names(uint32_t capabilities) {
  static const char* const names[] = {"fp64",
                                      "fp16",
                                      "bf16",
                                      "matrix_cores",
                                      "unified_addressing",
                                      "async_copy",
                                      "host_is_device",
                                      "reserved_addresses"};
  std::vector<std::string> out;
  for (uint32_t bit = 0; bit < 32; ++bit) {
    if (!(capabilities & (1u << bit))) continue;
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%x", 1u << bit);
    out.emplace_back(bit < std::size(names) ? names[bit] : hex);
  }
  return out;
}

inline int32_t device_count() { return detail::out<int32_t>(porta_device_count); }

// Device indices [0, device_count()).
inline std::vector<porta_device_t> devices() {
  std::vector<porta_device_t> out(static_cast<size_t>(device_count()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<porta_device_t>(i);
  return out;
}

inline porta_device_t default_device() { return detail::out<porta_device_t>(porta_device_default); }

inline porta_device_properties_t device_properties(porta_device_t device) {
  porta_device_properties_t properties{};
  properties.struct_size = sizeof properties;
  check(porta_device_properties(device, &properties));
  return properties;
}

struct memory_info {
  uint64_t free = 0;
  uint64_t total = 0;
};

inline memory_info device_memory_info(porta_device_t device) {
  memory_info info;
  check(porta_device_memory_info(device, &info.free, &info.total));
  return info;
}

inline void device_synchronize(porta_device_t device) { check(porta_device_synchronize(device)); }

/* ---- Handles ------------------------------------------------------------------------------- */

namespace detail {
// A move-only owner of a C handle; `owned == false` borrows it (never destroyed). A moved-from,
// released or reset object holds a handle no object has, which every call refuses as stale: NULL
// would mean the default stream to the calls that take one.
template <class Handle, porta_status_t (*Destroy)(Handle)>
class unique_handle {
 public:
  unique_handle() noexcept = default;
  explicit unique_handle(Handle handle, bool owned = true) noexcept : h_(handle), owned_(owned) {}
  unique_handle(unique_handle&& other) noexcept
      : h_(std::exchange(other.h_, moved())), owned_(other.owned_) {}
  unique_handle& operator=(unique_handle&& other) noexcept {
    if (this != &other) {
      reset();
      h_ = std::exchange(other.h_, moved());
      owned_ = other.owned_;
    }
    return *this;
  }
  ~unique_handle() { reset(); }

  Handle get() const noexcept { return h_; }
  explicit operator bool() const noexcept { return h_ != nullptr && h_ != moved(); }
  void reset() noexcept {
    if (*this && owned_) Destroy(h_);
    h_ = moved();
  }
  Handle release() noexcept { return std::exchange(h_, moved()); }

 private:
  static Handle moved() noexcept { return reinterpret_cast<Handle>(~uintptr_t{0}); }
  Handle h_ = nullptr;
  bool owned_ = true;
};
}  // namespace detail

class event;

// An in-order queue of work on one device.
class stream : public detail::unique_handle<porta_stream_t, porta_stream_destroy> {
 public:
  stream() noexcept = default;  // the default stream of the default device
  explicit stream(porta_device_t device)
      : stream(detail::out<porta_stream_t>(porta_stream_create, device), true) {}
  // The device's default stream, borrowed.
  static stream default_stream(porta_device_t device) {
    return stream(detail::out<porta_stream_t>(porta_stream_default, device), false);
  }
  // Wraps a C handle; owned == true destroys it with this object.
  static stream wrap(porta_stream_t handle, bool owned) noexcept { return stream(handle, owned); }

  porta_device_t device() const { return detail::out<porta_device_t>(porta_stream_device, get()); }
  void synchronize() const { check(porta_stream_synchronize(get())); }
  bool query() const {  // true when all queued work has finished
    const porta_status_t status = porta_stream_query(get());
    check(status);
    return status == PORTA_SUCCESS;
  }
  inline void wait(const event& e) const;  // later work waits for e, the host does not
  // CUstream, hipStream_t, ze_command_queue_handle_t; throws UNSUPPORTED on the CPU.
  void* native() const { return detail::out<void*>(porta_stream_native_handle, get()); }
  // Queues fn(user_data) after the work queued so far (porta_stream_launch_host_func).
  void launch_host_func(porta_host_fn_t fn, void* user_data) const {
    check(porta_stream_launch_host_func(get(), fn, user_data));
  }

 private:
  stream(porta_stream_t handle, bool owned) noexcept : unique_handle(handle, owned) {}
};

// A marker in a stream, to wait on and to time work with.
class event : public detail::unique_handle<porta_event_t, porta_event_destroy> {
 public:
  event() noexcept = default;
  explicit event(porta_device_t device)
      : event(detail::out<porta_event_t>(porta_event_create, device), true) {}
  static event wrap(porta_event_t handle, bool owned) noexcept { return event(handle, owned); }

  void record(const stream& s = stream()) const { check(porta_event_record(get(), s.get())); }
  void synchronize() const { check(porta_event_synchronize(get())); }
  bool query() const {  // true when the captured work has completed
    const porta_status_t status = porta_event_query(get());
    check(status);
    return status == PORTA_SUCCESS;
  }
  // Milliseconds from start to end; both must have completed (synchronize end first).
  static float elapsed_ms(const event& start, const event& end) {
    return detail::out<float>(porta_event_elapsed_ms, start.get(), end.get());
  }

 private:
  event(porta_event_t handle, bool owned) noexcept : unique_handle(handle, owned) {}
};

inline void stream::wait(const event& e) const { check(porta_stream_wait_event(get(), e.get())); }

/* ---- Memory -------------------------------------------------------------------------------- */

namespace detail {
// count elements of T from Alloc, released with Free.
template <class T, porta_status_t (*Alloc)(porta_device_t, size_t, void**),
          porta_status_t (*Free)(void*)>
class buffer {
  static_assert(std::is_trivially_copyable_v<T>, "Porta buffers hold trivially copyable types");

 public:
  buffer() noexcept = default;
  buffer(porta_device_t device, size_t count) : size_(count), device_(device) {
    if (count > SIZE_MAX / sizeof(T)) throw error(PORTA_ERROR_OUT_OF_MEMORY, "count too large");
    data_ = static_cast<T*>(detail::out<void*>(Alloc, device, count * sizeof(T)));
  }
  // A buffer made from a moved-from one is moved-from too: it holds no memory either.
  buffer(buffer&& other) noexcept {
    swap(other);
    other.moved_ = true;
  }
  buffer& operator=(buffer&& other) noexcept {
    buffer(std::move(other)).swap(*this);
    return *this;
  }
  ~buffer() {
    if (data_) Free(data_);
  }

  T* data() const noexcept { return data_; }
  size_t size() const noexcept { return size_; }
  size_t bytes() const noexcept { return size_ * sizeof(T); }
  bool empty() const noexcept { return size_ == 0; }
  porta_device_t device() const noexcept { return device_; }
  // Where data() is stored: lets kernel::launch pass a buffer as its device pointer.
  T* const* data_address() const noexcept { return &data_; }
  // Whether its memory was moved to another buffer (data() is then NULL).
  bool moved_from() const noexcept { return moved_; }

 private:
  void swap(buffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(device_, other.device_);
    std::swap(moved_, other.moved_);
  }
  T* data_ = nullptr;
  size_t size_ = 0;
  porta_device_t device_ = 0;
  bool moved_ = false;
};
}  // namespace detail

// count elements of device memory. Copies take element counts; the runtime checks overruns.
template <class T>
class device_buffer : public detail::buffer<T, porta_memory_alloc, porta_memory_free> {
 public:
  using detail::buffer<T, porta_memory_alloc, porta_memory_free>::buffer;

  void copy_from_host(const T* src, size_t count) {
    check(porta_memcpy(this->data(), src, n(count)));
  }
  void copy_to_host(T* dst, size_t count) const {
    check(porta_memcpy(dst, this->data(), n(count)));
  }
  // Queued on s; host memory must stay valid until s completes (pinned memory overlaps).
  void copy_from_host_async(const T* src, size_t count, const stream& s) {
    check(porta_memcpy_async(this->data(), src, n(count), s.get()));
  }
  void copy_to_host_async(T* dst, size_t count, const stream& s) const {
    check(porta_memcpy_async(dst, this->data(), n(count), s.get()));
  }
  void copy_from_host(const std::vector<T>& src) { copy_from_host(src.data(), src.size()); }
  std::vector<T> to_vector() const {
    std::vector<T> out(this->size());
    copy_to_host(out.data(), out.size());
    return out;
  }
  void memset(int byte) { check(porta_memset(this->data(), byte, this->bytes())); }
  void memset_async(int byte, const stream& s) {
    check(porta_memset_async(this->data(), byte, this->bytes(), s.get()));
  }

 private:
  static size_t n(size_t count) {
    if (count > SIZE_MAX / sizeof(T)) throw error(PORTA_ERROR_INVALID_ARGUMENT, "count too large");
    return count * sizeof(T);
  }
};

// count elements of page-locked host memory, for asynchronous copies.
template <class T>
class pinned_buffer : public detail::buffer<T, porta_host_alloc, porta_host_free> {
 public:
  using detail::buffer<T, porta_host_alloc, porta_host_free>::buffer;

  T& operator[](size_t i) const noexcept { return this->data()[i]; }
  T* begin() const noexcept { return this->data(); }
  T* end() const noexcept { return this->data() + this->size(); }
};

/* ---- Modules and kernels ------------------------------------------------------------------- */

// Work-groups or work-items per dimension; converts from one count for 1-D launches.
struct dim3 {
  uint32_t x = 1, y = 1, z = 1;
  dim3(uint32_t x_ = 1, uint32_t y_ = 1, uint32_t z_ = 1) noexcept : x(x_), y(y_), z(z_) {}
};

inline porta_launch_config_t launch_config(dim3 grid, dim3 group,
                                           uint32_t shared_memory_bytes = 0) {
  porta_launch_config_t c{};
  c.struct_size = sizeof c;
  c.grid[0] = grid.x, c.grid[1] = grid.y, c.grid[2] = grid.z;
  c.group[0] = group.x, c.group[1] = group.y, c.group[2] = group.z;
  c.shared_memory_bytes = shared_memory_bytes;
  return c;
}

// Groups of `group` items that cover n items; throws INVALID_ARGUMENT for a group of 0 items or
// more groups than a grid dimension holds, rather than a grid that covers only part of n.
inline uint32_t div_up(size_t n, uint32_t group) {
  if (group == 0) throw error(PORTA_ERROR_INVALID_ARGUMENT, "div_up: a group of 0 items");
  const size_t groups = n / group + (n % group != 0);
  if (groups > UINT32_MAX) {
    throw error(PORTA_ERROR_INVALID_ARGUMENT, "div_up: " + std::to_string(n) +
                                                  " items need more than 2^32 - 1 groups of " +
                                                  std::to_string(group));
  }
  return static_cast<uint32_t>(groups);
}

namespace detail {
template <class T>
const void* arg_address(const T& value) noexcept {
  static_assert(std::is_trivially_copyable_v<T>, "kernel arguments are copied bytewise");
  return &value;
}
// A moved-from buffer would pass NULL, which a kernel would write through.
template <class T>
void check_not_moved(const device_buffer<T>& buffer) {
  if (buffer.moved_from()) {
    throw error(PORTA_ERROR_INVALID_ARGUMENT,
                "a kernel argument is a moved-from device_buffer; nothing was launched");
  }
}
template <class T>
const void* arg_address(const device_buffer<T>& buffer) {
  check_not_moved(buffer);
  return buffer.data_address();
}

// The value an argument passes: itself, or a device_buffer's device pointer.
template <class T>
struct passed {
  using type = T;
};
template <class T>
struct passed<device_buffer<T>> {
  using type = T*;
};
template <class A>
using passed_t = typename passed<std::remove_cv_t<std::remove_reference_t<A>>>::type;

// Whether argument type A may fill parameter type P: the same type, or a pointer (a buffer's
// too) that converts to P without a cast (float* to const float*). No arithmetic conversions, so
// swapped arguments (2.0f, n) fail to compile rather than being converted.
template <class A, class P>
inline constexpr bool fits_param = std::is_same_v<passed_t<A>, std::remove_cv_t<P>> ||
                                   (std::is_pointer_v<passed_t<A>> && std::is_pointer_v<P> &&
                                    std::is_convertible_v<passed_t<A>, P>);

template <class T>
T passed_value(const T& value) noexcept {
  return value;
}
template <class T>
T* passed_value(const device_buffer<T>& buffer) {
  check_not_moved(buffer);
  return buffer.data();
}

// Launches with the argument sizes stated, so that libporta checks them against the kernel's
// recorded parameters (porta_launch_config_t.arg_sizes).
inline void launch_checked(porta_kernel_t kernel, const porta_launch_config_t& config,
                           void** addresses, uint32_t count, const size_t* sizes,
                           porta_stream_t stream) {
  porta_launch_config_t stated = config;
  stated.struct_size = sizeof stated;
  stated.arg_count = count;
  stated.arg_sizes = sizes;
  check(porta_kernel_launch(kernel, &stated, addresses, stream));
}
}  // namespace detail

// A kernel of a loaded module; a plain value, valid while its module is loaded.
class kernel {
 public:
  kernel() noexcept = default;
  explicit kernel(porta_kernel_t handle) noexcept : h_(handle) {}
  porta_kernel_t get() const noexcept { return h_; }
  explicit operator bool() const noexcept { return h_ != nullptr; }

  // Queues the kernel with args as its parameters, in order. Each argument's type must be the
  // parameter's exact type (pass uint32_t(n), not n, to a uint32_t parameter); a device_buffer
  // passes its device pointer. Arguments are copied before launch returns. libporta checks their
  // count and sizes against the kernel's parameters (porta::error, INVALID_ARGUMENT, nothing
  // queued); typed_kernel checks their types at compile time.
  template <class... Args>
  void launch(const stream& s, const porta_launch_config_t& config, const Args&... args) const {
    void* addresses[sizeof...(Args) + 1] = {const_cast<void*>(detail::arg_address(args))...};
    const size_t sizes[sizeof...(Args) + 1] = {sizeof(detail::passed_t<Args>)...};
    detail::launch_checked(h_, config, addresses, sizeof...(Args), sizes, s.get());
  }
  template <class... Args>
  void launch(const stream& s, dim3 grid, dim3 group, const Args&... args) const {
    launch(s, launch_config(grid, group), args...);
  }

 private:
  porta_kernel_t h_ = nullptr;
};

// A kernel whose parameter types the host states, in the kernel's order:
//   auto saxpy = m.kernel<uint32_t, float, const float*, float*>("saxpy");
//   saxpy.launch(s, grid, group, uint32_t(n), 2.0f, x, y);
// A launch with another number of arguments, or an argument that is not the parameter's type (a
// pointer that converts to it without a cast, a device_buffer<T> for T*), fails to compile. The
// stated parameters' count and sizes are checked against those the module records when the
// kernel is looked up (porta::error, INVALID_ARGUMENT, naming the parameter); their spelled
// types are not compared (int and float have one size).
template <class... Params>
class typed_kernel {
 public:
  typed_kernel() noexcept = default;
  explicit typed_kernel(porta_kernel_t handle) : k_(handle) { check_params(); }
  porta_kernel_t get() const noexcept { return k_.get(); }
  explicit operator bool() const noexcept { return bool(k_); }
  // The same kernel without compile-time checks.
  const porta::kernel& untyped() const noexcept { return k_; }

  template <class... Args>
  void launch(const stream& s, const porta_launch_config_t& config, const Args&... args) const {
    static_assert(sizeof...(Args) == sizeof...(Params),
                  "porta::typed_kernel::launch: the argument count differs from the kernel's "
                  "parameter count");
    if constexpr (sizeof...(Args) == sizeof...(Params)) {  // one error, not a cascade
      static_assert((detail::fits_param<Args, Params> && ...),
                    "porta::typed_kernel::launch: an argument's type differs from its parameter's "
                    "(pass the exact type: uint32_t(n), 2.0f)");
      if constexpr ((detail::fits_param<Args, Params> && ...)) {
        // The values as the parameters' own types, so each has the parameter's size.
        const std::tuple<std::remove_cv_t<Params>..., char> values{detail::passed_value(args)...,
                                                                   0};
        launch_values(s, config, values, std::index_sequence_for<Params...>{});
      }
    }
  }
  template <class... Args>
  void launch(const stream& s, dim3 grid, dim3 group, const Args&... args) const {
    launch(s, launch_config(grid, group), args...);
  }

 private:
  template <class Tuple, size_t... I>
  void launch_values(const stream& s, const porta_launch_config_t& config, const Tuple& values,
                     std::index_sequence<I...>) const {
    void* addresses[sizeof...(Params) + 1] = {
        const_cast<void*>(static_cast<const void*>(&std::get<I>(values)))...};
    const size_t sizes[sizeof...(Params) + 1] = {sizeof(Params)...};
    detail::launch_checked(k_.get(), config, addresses, sizeof...(Params), sizes, s.get());
  }

  void check_params() const {
    porta_kernel_params_t params{};
    params.struct_size = sizeof params;
    const porta_status_t status = porta_kernel_get_params(k_.get(), &params);
    if (status == PORTA_ERROR_NOT_FOUND) return;  // not recorded: libporta cannot check either
    check(status);
    const size_t sizes[sizeof...(Params) + 1] = {sizeof(Params)...};
    if (params.count != sizeof...(Params)) {
      throw error(PORTA_ERROR_INVALID_ARGUMENT,
                  "porta::typed_kernel: the kernel takes " + std::to_string(params.count) +
                      " parameters, the typed_kernel states " + std::to_string(sizeof...(Params)));
    }
    for (uint32_t i = 0; i < params.count; ++i) {
      if (params.sizes[i] != sizes[i]) {
        const char* name = params.names[i];
        const char* type = params.types[i];
        throw error(PORTA_ERROR_INVALID_ARGUMENT,
                    "porta::typed_kernel: parameter " + std::to_string(i) +
                        (name ? " '" + std::string(name) + "'" : std::string()) +
                        (type ? " (" + std::string(type) + ")" : std::string()) + " takes " +
                        std::to_string(params.sizes[i]) + " bytes, the typed_kernel states " +
                        std::to_string(sizes[i]));
      }
    }
  }

  porta::kernel k_;
};

// A code object loaded on one device; unloading waits for the device's pending work.
class module : public detail::unique_handle<porta_module_t, porta_module_unload> {
 public:
  module() noexcept = default;
  module(porta_device_t device, const std::string& path) :unique_handle(
      detail::out<porta_module_t>(porta_module_load, device, path.c_str())) {}
  // The image is copied and may be freed after the call.
  module(porta_device_t device, const void* image,
         size_t size) :unique_handle(detail::out<porta_module_t>(porta_module_load_data, device,
                                                                 image, size)) {}

  porta::kernel kernel(const std::string& name) const {
    return porta::kernel(detail::out<porta_kernel_t>(porta_kernel_get, get(), name.c_str()));
  }
  // The kernel with its parameter types stated (typed_kernel): m.kernel<uint32_t, float*>("k").
  template <class P0, class... Params>
  typed_kernel<P0, Params...> kernel(const std::string& name) const {
    return typed_kernel<P0, Params...>(
        detail::out<porta_kernel_t>(porta_kernel_get, get(), name.c_str()));
  }
};

}  // namespace porta

#endif  // PORTA_PORTA_HPP_
