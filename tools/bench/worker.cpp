// Worker processes: each implementation (variant) gets its own process with its own porta_init,
// so that porta-bench can time the implementations of one shape in turn, one repetition each,
// while all of them are set up (Porta selects its op plugin once per initialisation).
//
// Messages are frames, a 64-bit length then that many bytes, holding JSON; after "finish" the
// worker sends the output's floats as one more frame. Requests and answers:
//   (none)                                   -> hello: {"ok", "error", "libraries",
//                                               "backends": [{"backend", "gpu", "properties"
//                                               (the struct's bytes in hex), "ops" (null: every
//                                               op), "skip" (why this variant has nothing here)}]}
//   {"cmd": "peak", "backend"}               -> the peak's fields
//   {"cmd": "prepare", "problem", "backend", "reps"}
//                                            -> {"status", "message", "warmup", "sets",
//                                               "copy_bytes" (0: no copy is timed)}
//   {"cmd": "rep", "i"}                      -> {"status", "message", "ms",
//                                               "copy_ms" (bandwidth ops)}
//   {"cmd": "finish"}                        -> {"status", "message"}, then the floats
//   {"cmd": "quit"} or the pipe closed       -> porta_shutdown, exit
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "bench.h"

namespace bench {

namespace {

using json = nlohmann::ordered_json;

bool write_all(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool read_all(int fd, void* data, size_t size) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = ::read(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool send_frame(int fd, const void* data, uint64_t size) {
  return write_all(fd, &size, sizeof size) && write_all(fd, data, size);
}

bool send_json(int fd, const json& message) {
  const std::string text = message.dump();
  return send_frame(fd, text.data(), text.size());
}

std::optional<std::string> receive_frame(int fd) {
  uint64_t size = 0;
  if (!read_all(fd, &size, sizeof size)) return std::nullopt;
  std::string bytes(size, '\0');
  if (!read_all(fd, bytes.data(), size)) return std::nullopt;
  return bytes;
}

std::string to_hex(const void* data, size_t size) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < size; ++i) {
    const auto byte = static_cast<const unsigned char*>(data)[i];
    out += digits[byte >> 4];
    out += digits[byte & 15];
  }
  return out;
}

std::vector<porta_plugin_report_t> loader_report() {
  try {
    return porta::loader_report();
  } catch (const porta::error&) {
    return {};
  }
}

const porta_plugin_report_t* report_row(const std::vector<porta_plugin_report_t>& report,
                                        porta_plugin_kind_t kind, const std::string& name) {
  for (const porta_plugin_report_t& row : report)
    if (row.kind == kind && name == row.name) return &row;
  return nullptr;
}

// One device per loaded backend: the default device for the selected backend, the first of
// each other backend's devices.
std::vector<std::pair<std::string, porta_device_t>> backend_devices() {
  std::vector<std::pair<std::string, porta_device_t>> out;
  const porta_device_t default_device = porta::default_device();
  out.emplace_back(porta::device_properties(default_device).backend, default_device);
  for (porta_device_t d : porta::devices()) {
    const std::string backend = porta::device_properties(d).backend;
    const bool seen =
        std::any_of(out.begin(), out.end(), [&](const auto& e) { return e.first == backend; });
    if (!seen) out.emplace_back(backend, d);
  }
  return out;
}

bool is_gpu(const porta_device_properties_t& props) {
  return (props.capabilities & PORTA_CAPABILITY_HOST_IS_DEVICE) == 0;
}

// What this variant measures on each backend.
json hello(const Variant& variant, std::map<std::string, porta_device_t>& devices) {
  json backends = json::array();
  const std::vector<porta_plugin_report_t> report = loader_report();
  for (const auto& [backend, device] : backend_devices()) {
    const porta_device_properties_t props = porta::device_properties(device);
    devices[backend] = device;
    json entry = {{"backend", backend},
                  {"gpu", is_gpu(props)},
                  {"properties", to_hex(&props, sizeof props)},
                  {"ops", nullptr},
                  {"skip", ""}};
    if (variant.blocked()) {
      // oneDNN reads and writes Porta's buffers directly: host memory only.
      if (is_gpu(props))
        entry["skip"] = "oneDNN's blocked layouts are measured on the cpu backend only";
      else
        entry["ops"] = {"conv2d_forward", "conv2d_backward_data", "conv2d_backward_weights"};
    } else if (variant.vendor()) {
      const porta_plugin_report_t* row =
          report_row(report, PORTA_PLUGIN_KIND_OPS, "vendor_" + backend);
      if (!row || row->outcome != PORTA_PLUGIN_LOADED) {
        entry["skip"] = "vendor ops on " + backend + ": " +
                        (row ? std::string(row->reason) : "not in the loader report");
      } else if (auto listed = listed_ops(*row)) {
        entry["ops"] = *listed;
      }
    }
    backends.push_back(entry);
  }
  return {{"ok", true}, {"libraries", libraries_json(report)}, {"backends", backends}};
}

json peak_json(const Peak& p) {
  return {{"fma_gflops", p.fma_gflops}, {"copy_gbps", p.copy_gbps},   {"fma_ms", p.fma_ms},
          {"copy_ms", p.copy_ms},       {"copy_bytes", p.copy_bytes}, {"error", p.error}};
}

json failure(const std::exception& e) {
  const auto* porta_error = dynamic_cast<const porta::error*>(&e);
  const bool unsupported = porta_error && porta_error->status() == PORTA_ERROR_UNSUPPORTED;
  return {{"status", unsupported ? "unsupported" : "error"}, {"message", e.what()}};
}

// The worker's life: initialise, say hello, answer requests until told to quit.
[[noreturn]] void serve(const Variant& variant, const std::string& backends,
                        const Settings& settings, const std::vector<Problem>& todo,
                        const std::string& kernel_library, int in, int out) {
  // The variant's library, whatever the environment says.
  if (variant.library.empty())
    unsetenv("PORTA_VENDOR_LIBRARY");
  else
    setenv("PORTA_VENDOR_LIBRARY", variant.library.c_str(), 1);
  // oneDNN's OpenMP threads bound to a core each (unless the environment says otherwise), as
  // Porta's CPU backend binds its own: left unbound, they often shared one core in turn with the
  // other workers and read half their speed for whole runs of repetitions.
  if (variant.library == "onednn" || variant.blocked()) setenv("OMP_PROC_BIND", "true", 0);
  porta_init_options_t init{};
  init.struct_size = sizeof init;
  init.backend = backends.empty() ? nullptr : backends.c_str();
  init.ops = variant.ops.c_str();
  std::map<std::string, porta_device_t> devices;
  const porta_status_t status = porta_init(&init);
  if (status != PORTA_SUCCESS) {
    const std::string why =
        std::string(porta_status_name(status)) + ": " + porta_last_error_message();
    send_json(out, {{"ok", false},
                    {"error", why},
                    {"libraries", libraries_json(loader_report())},
                    {"backends", json::array()}});
    porta_shutdown();
    _exit(0);
  }
  try {
    send_json(out, hello(variant, devices));
  } catch (const std::exception& e) {
    send_json(out, {{"ok", false}, {"error", e.what()}, {"backends", json::array()}});
  }

  std::unique_ptr<Measurement> measurement;
  while (auto frame = receive_frame(in)) {
    json answer;
    json request;
    try {
      request = json::parse(*frame);
    } catch (const std::exception&) {
      break;
    }
    const std::string cmd = request.value("cmd", "");
    if (cmd == "quit") break;
    try {
      if (cmd == "peak") {
        answer = peak_json(measure_peak(devices.at(request.at("backend")), kernel_library));
      } else if (cmd == "prepare") {
        measurement.reset();
        const Problem& problem = todo.at(request.at("problem").get<size_t>());
        const porta_device_t device = devices.at(request.at("backend"));
        const bool gpu = is_gpu(porta::device_properties(device));
        measurement = std::make_unique<Measurement>(device, gpu, settings, problem.shape,
                                                    problem.dtype, request.at("reps").get<int>(),
                                                    variant.algorithm, kernel_library);
        answer = {{"status", "ok"},
                  {"message", ""},
                  {"warmup", measurement->warmup()},
                  {"sets", measurement->sets()},
                  {"copy_bytes", measurement->copy_bytes()}};
      } else if (cmd == "rep") {
        if (!measurement) throw std::runtime_error("rep before prepare");
        const Measurement::Times times = measurement->rep(request.at("i"));
        answer = {{"status", "ok"}, {"message", ""}, {"ms", times.ms}};
        if (times.copy_ms) answer["copy_ms"] = *times.copy_ms;
      } else if (cmd == "finish") {
        if (!measurement) throw std::runtime_error("finish before prepare");
        std::vector<float> output = measurement->output();
        measurement.reset();
        send_json(out, {{"status", "ok"}, {"message", ""}});
        send_frame(out, output.data(), output.size() * sizeof(float));
        continue;
      } else {
        answer = {{"status", "error"}, {"message", "unknown request " + cmd}};
      }
    } catch (const std::exception& e) {
      answer = failure(e);
      if (cmd == "finish") {
        measurement.reset();
        send_json(out, answer);
        send_frame(out, nullptr, 0);
        continue;
      }
    }
    if (!send_json(out, answer)) break;
  }
  measurement.reset();
  porta_shutdown();
  _exit(0);
}

}  // namespace

Worker::Worker(const Variant& variant, const std::string& backends, const Settings& settings,
               const std::vector<Problem>& todo, const std::string& kernel_library,
               const std::vector<int>& close_in_child)
    : variant_(variant) {
  // A worker that dies must not take porta-bench with it: writes to it fail instead.
  std::signal(SIGPIPE, SIG_IGN);
  int down[2], up[2];
  if (pipe(down) != 0) throw std::runtime_error("pipe: " + std::string(std::strerror(errno)));
  if (pipe(up) != 0) {
    close(down[0]), close(down[1]);
    throw std::runtime_error("pipe: " + std::string(std::strerror(errno)));
  }
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    for (int fd : {down[0], down[1], up[0], up[1]}) close(fd);
    throw std::runtime_error("fork: " + std::string(std::strerror(errno)));
  }
  if (pid == 0) {
    // Only its own ends: a worker holding another's pipe would keep it from seeing EOF.
    for (int fd : close_in_child) close(fd);
    close(down[1]);
    close(up[0]);
    serve(variant, backends, settings, todo, kernel_library, down[0], up[1]);
  }
  close(down[0]);
  close(up[1]);
  pid_ = pid;
  to_ = down[1];
  from_ = up[0];
}

uint64_t Worker::cpu_ns() const {
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& task :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid_) + "/task", ec)) {
    std::ifstream stat(task.path() / "schedstat");
    uint64_t ns = 0;
    if (stat >> ns) total += ns;
  }
  return total;
}

bool Worker::running() const {
  std::error_code ec;
  for (const auto& task :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid_) + "/task", ec)) {
    std::ifstream stat(task.path() / "stat");
    std::string line;
    std::getline(stat, line);
    // "tid (name) S ...": the state follows the name, which may itself hold ") ".
    const size_t name_end = line.rfind(") ");
    if (name_end != std::string::npos && line.compare(name_end + 2, 1, "R") == 0) return true;
  }
  return false;
}

Worker::~Worker() {
  if (pid_ <= 0) return;
  send_json(to_, {{"cmd", "quit"}});
  close(to_);
  close(from_);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

std::string Worker::died() {
  int status = 0;
  std::string how = "ended";
  if (waitpid(pid_, &status, 0) == pid_) {
    if (WIFSIGNALED(status)) how = "was killed by signal " + std::to_string(WTERMSIG(status));
    if (WIFEXITED(status)) how = "exited with status " + std::to_string(WEXITSTATUS(status));
  }
  pid_ = -1;
  close(to_);
  close(from_);
  return "the " + variant_.impl + " worker process " + how;
}

nlohmann::ordered_json Worker::hello() { return receive(); }

nlohmann::ordered_json Worker::receive() {
  if (pid_ <= 0) throw std::runtime_error("the " + variant_.impl + " worker process has ended");
  auto frame = receive_frame(from_);
  if (!frame) throw std::runtime_error(died());
  return json::parse(*frame);
}

nlohmann::ordered_json Worker::call(const nlohmann::ordered_json& request) {
  if (pid_ <= 0) throw std::runtime_error("the " + variant_.impl + " worker process has ended");
  if (!send_json(to_, request)) throw std::runtime_error(died());
  return receive();
}

std::vector<float> Worker::floats() {
  if (pid_ <= 0) throw std::runtime_error("the " + variant_.impl + " worker process has ended");
  auto frame = receive_frame(from_);
  if (!frame) throw std::runtime_error(died());
  std::vector<float> out(frame->size() / sizeof(float));
  std::memcpy(out.data(), frame->data(), out.size() * sizeof(float));
  return out;
}

}  // namespace bench
