// porta-train: trains a small CNN on Fashion-MNIST with Porta's operator set on the device that
// PORTA_BACKEND (or --backend) selects, evaluates it on the test set, and prints one JSON line.
// Checkpoints (CHECKPOINT.md) move between backends and op implementations.
//
// Exit status: 0 on success; 1 when training or evaluation fails (bad data, a bad checkpoint, an
// op error); 2 for bad usage (a flag, or a bad --backend or PORTA_* value); 3 when the backend,
// the op implementation or an operator-set feature asked for (--precision bf16) is not available
// here (the message says why).
#include <porta/porta_comm.h>
#include <porta/porta_ops.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <porta/porta.hpp>
#include <string>

#include "checkpoint.h"
#include "cli_checks.h"
#include "idx.h"
#include "model.h"
#include "trainer.h"

namespace {

using namespace porta_train;

constexpr int kExitFailure = 1, kExitUsage = 2, kExitUnavailable = 3;
constexpr int64_t kEvalBatch = 256;

struct Options {
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::string backend;
  int epochs = 5;
  int64_t batch = 64;
  std::optional<double> lr;
  std::string optimizer = "adam";
  uint64_t seed = 1;
  int64_t grad_accum = 1;
  std::string precision = "f32";
  std::string checkpoint;
  std::string predictions;
  bool eval_only = false;
  int64_t train_limit = 0, test_limit = 0;
  bool progress = true;
  bool profile = false;
};

// The time per op kind of the training steps (--profile), largest first, on stderr.
void print_profile(const OpProfile& profile) {
  std::vector<OpProfile::Entry> entries = profile.entries;
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.seconds > b.seconds; });
  double total = 0;
  for (const auto& e : entries) total += e.seconds;
  std::fprintf(stderr, "%-24s %8s %10s %10s %7s\n", "op (each timed alone)", "calls", "total ms",
               "ms/call", "share");
  for (const auto& e : entries) {
    std::fprintf(stderr, "%-24s %8lld %10.1f %10.3f %6.1f%%\n", e.kind.c_str(),
                 static_cast<long long>(e.calls), 1e3 * e.seconds, 1e3 * e.seconds / e.calls,
                 total > 0 ? 100.0 * e.seconds / total : 0.0);
  }
  std::fprintf(stderr, "%-24s %8s %10.1f\n", "all", "", 1e3 * total);
}

// Porta is not usable for this run: the backend or the op implementation is missing here.
struct unavailable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A bad --backend (or PORTA_* environment) value, found when Porta starts.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Progress on stderr: a bar redrawn in place on a terminal (at most ten times a second), one
// line per epoch otherwise, so logs stay readable.
class ProgressBar {
 public:
  ProgressBar(int epoch, int epochs, bool enabled)
      : epoch_(epoch),
        epochs_(epochs),
        enabled_(enabled),
        tty_(isatty(STDERR_FILENO) == 1),
        start_(std::chrono::steady_clock::now()) {}
  void update(int64_t done, int64_t total, double loss) {
    if (!enabled_ || !tty_) return;
    const auto now = std::chrono::steady_clock::now();
    if (done < total && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    draw(done, total, loss, '\r');
  }
  void finish(int64_t images, double seconds, double loss) {
    if (!enabled_) return;
    seconds_ = seconds;
    draw(images, images, loss, tty_ ? '\r' : '\0');
    std::fputc('\n', stderr);
  }

 private:
  void draw(int64_t done, int64_t total, double loss, char lead) {
    constexpr int kWidth = 30;
    const double seconds =
        seconds_ > 0
            ? seconds_
            : std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const int filled = total > 0 ? int(kWidth * done / total) : 0;
    std::string bar(size_t(filled), '#');
    bar.resize(kWidth, '.');
    if (lead) std::fputc(lead, stderr);
    std::fprintf(stderr, "epoch %d/%d [%s] %lld/%lld  %.0f img/s  loss %.4f  %.1f s", epoch_,
                 epochs_, bar.c_str(), (long long)done, (long long)total,
                 seconds > 0 ? double(done) / seconds : 0.0, loss, seconds);
    std::fflush(stderr);
  }
  int epoch_, epochs_;
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point start_, last_{};
  double seconds_ = 0;
};

// Whether the op implementation serves the device: a one-element ReLU answers UNAVAILABLE with
// the reason when none is loaded, before any data is read.
void probe_ops(porta_device_t device) {
  porta::device_buffer<float> x(device, 2);
  porta::stream s(device);
  const porta_status_t status = porta_relu_forward(s.get(), 1, x.data(), x.data() + 1);
  if (status == PORTA_ERROR_UNAVAILABLE) {
    throw unavailable(std::string("no op implementation: ") + porta_last_error_message());
  }
  porta::check(status);
  s.synchronize();
}

ImageSet load_split(const Options& o, const std::string& split, int64_t limit) {
  ImageSet set =
      read_image_set(idx_path(o.data, split, "images-idx3"), idx_path(o.data, split, "labels-idx1"),
                     int(kClasses), uint32_t(kImageSide));
  if (limit > 0 && limit < set.count) {
    set.count = limit;
    set.pixels.resize(size_t(limit * set.rows * set.cols));
    set.labels.resize(size_t(limit));
  }
  return set;
}

void write_predictions(const std::string& path, const std::vector<uint8_t>& predictions) {
  std::string text;
  for (uint8_t p : predictions) text += std::to_string(p) + '\n';
  porta_tools::write_whole_file(path, text);
}

// Whether mpirun (Open MPI, or a PMI launcher such as MPICH's) started this process.
bool launched_by_mpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") || std::getenv("PMIX_RANK");
}

// A setting every rank must share for the replicas to stay one model.
struct Shared {
  const char* name;
  uint64_t value;
  std::vector<std::string> choices;  // what value indexes, if it is a choice
  bool real = false;                 // value holds a double's bits
};

std::string shown(const Shared& setting, uint64_t value) {
  if (setting.real) return std::to_string(std::bit_cast<double>(value));
  if (value < setting.choices.size()) return setting.choices[value];
  return std::to_string(value);
}

// Compares the settings across the ranks before training: ranks started with other flags or data
// would otherwise train apart, each applying the same averaged gradients to its own weights, and
// report success. Every rank throws, naming what differs.
void check_ranks_agree(porta_comm_t comm, int32_t ranks, porta_device_t device,
                       const std::vector<Shared>& settings) {
  const size_t n = settings.size();
  std::vector<uint64_t> mine(n);
  for (size_t i = 0; i < n; ++i) mine[i] = settings[i].value;
  porta::device_buffer<uint64_t> send(device, n), all(device, n * size_t(ranks));
  send.copy_from_host(mine);
  // Gathered as the floats that hold the same bytes.
  porta::check(
      porta_comm_all_gather(comm, send.data(), all.data(), 2 * n, PORTA_DTYPE_F32, nullptr));
  const std::vector<uint64_t> every = all.to_vector();
  std::string differ;
  for (size_t i = 0; i < n; ++i) {
    for (int32_t r = 1; r < ranks; ++r) {
      const uint64_t first = every[i], theirs = every[size_t(r) * n + i];
      if (theirs == first) continue;
      differ += std::string(differ.empty() ? "" : "; ") + settings[i].name + " is " +
                shown(settings[i], first) + " on rank 0, " + shown(settings[i], theirs) +
                " on rank " + std::to_string(r);
    }
  }
  if (!differ.empty()) {
    throw std::runtime_error("the ranks were started with different settings or data: " + differ);
  }
}

int run(const Options& o) {
  porta_init_options_t init{};
  init.struct_size = sizeof init;
  init.backend = o.backend.empty() ? nullptr : o.backend.c_str();
  if (const porta_status_t status = porta_init(&init); status != PORTA_SUCCESS) {
    const std::string message = porta_last_error_message();
    if (status == PORTA_ERROR_UNAVAILABLE) throw unavailable(message);
    if (status == PORTA_ERROR_INVALID_ARGUMENT) throw usage_error(message);
    throw porta::error(status, message);
  }
  const porta_device_t device = porta::default_device();
  const porta_device_properties_t properties = porta::device_properties(device);
  probe_ops(device);

  // The data first: a rank that cannot read it then exits before it joins the others, and mpirun
  // ends the job at once, where a rank that had joined would keep them waiting until the
  // collectives' timeout.
  const Precision precision = o.precision == "bf16" ? Precision::bf16 : Precision::f32;
  const bool sgd = o.optimizer == "sgd";
  const double learning_rate = o.lr.value_or(sgd ? 0.05 : 1e-3);
  const ImageSet test = load_split(o, "t10k", o.test_limit);
  std::optional<ImageSet> train;
  if (!o.eval_only) train = load_split(o, "train", o.train_limit);

  // Under mpirun every process is a rank training a replica on its share of each batch.
  porta_comm_t comm = nullptr;
  int32_t rank = 0, ranks = 1;
  if (launched_by_mpirun()) {
    if (const porta_status_t status = porta_comm_create_from_launcher(device, &comm);
        status != PORTA_SUCCESS) {
      const std::string message = porta_last_error_message();
      if (status == PORTA_ERROR_UNAVAILABLE) throw unavailable(message);
      throw porta::error(status, message);
    }
    porta::check(porta_comm_rank(comm, &rank, &ranks, nullptr));
  }
  const bool leader = rank == 0;  // prints, writes files
  if (comm) {
    // The same list on every rank, --eval-only first (a rank evaluating while another trains
    // would leave that one waiting on its gradients): the training's entries are 0 without it.
    const uint32_t data = train ? crc32(train->labels.data(), train->labels.size(),
                                        crc32(train->pixels.data(), train->pixels.size()))
                                : 0;
    check_ranks_agree(comm, ranks, device,
                      {{"--eval-only", uint64_t(o.eval_only), {"off", "on"}},
                       {"--epochs", uint64_t(o.epochs), {}},
                       {"--batch", uint64_t(o.batch), {}},
                       {"--grad-accum", uint64_t(o.grad_accum), {}},
                       {"--seed", o.seed, {}},
                       {"--lr", std::bit_cast<uint64_t>(learning_rate), {}, true},
                       {"--optimizer", uint64_t(sgd), {"adam", "sgd"}},
                       {"--precision", uint64_t(precision == Precision::bf16), {"f32", "bf16"}},
                       {"the training images' count", train ? uint64_t(train->count) : 0, {}},
                       {"the training data's CRC-32", data, {}}});
  }

  Model model(device, std::max(o.batch, kEvalBatch), precision, o.grad_accum > 1);
  OpProfile profile;
  if (o.profile) model.set_profile(&profile);
  porta::stream s(device);
  std::vector<double> epoch_seconds;
  double train_loss = 0, trained_images = 0, allreduce_seconds = 0;
  if (o.eval_only) {
    // A file of another size is not this model's: refused before it is read into memory.
    const uint64_t model_bytes = encode_checkpoint(model.parameters(s)).size();
    model.load(read_checkpoint(o.checkpoint, model_bytes), s);
  } else {
    model.initialize(o.seed);
    TrainSettings settings;
    settings.batch = o.batch;
    settings.grad_accum = o.grad_accum;
    settings.seed = o.seed;
    settings.update.optimizer = sgd ? Optimizer::sgd : Optimizer::adam;
    settings.update.learning_rate = float(learning_rate);
    settings.update.accumulated = o.grad_accum;
    settings.comm = comm;
    Trainer trainer(model, *train, settings);
    for (int e = 0; e < o.epochs; ++e) {
      ProgressBar bar(e + 1, o.epochs, o.progress && leader);
      const EpochResult r = trainer.run_epoch(
          e, [&](int64_t done, int64_t total, double loss) { bar.update(done, total, loss); });
      bar.finish(r.images, r.seconds, r.mean_loss);
      if (!std::isfinite(r.mean_loss)) {
        throw std::runtime_error("the training loss diverged (" + std::to_string(r.mean_loss) +
                                 " in epoch " + std::to_string(e + 1) + "); try a smaller --lr");
      }
      epoch_seconds.push_back(r.seconds);
      allreduce_seconds += r.allreduce_seconds;
      train_loss = r.mean_loss;
      trained_images += double(r.images);
    }
    model.set_profile(nullptr);
    if (o.profile && leader) print_profile(profile);
    // Every rank holds the same weights: one file, written by rank 0.
    if (!o.checkpoint.empty() && leader) write_checkpoint(o.checkpoint, model.parameters(s));
  }
  if (comm) porta::check(porta_comm_destroy(comm));
  if (!leader) return 0;  // rank 0 evaluates and reports

  const EvalResult eval = evaluate(model, test, kEvalBatch);
  if (!o.predictions.empty()) write_predictions(o.predictions, eval.predictions);
  double total_seconds = 0;
  for (double t : epoch_seconds) total_seconds += t;

  using nlohmann::json;
  json line = {
      {"backend", properties.backend},
      {"device", properties.name},
      {"epochs", o.eval_only ? 0 : o.epochs},
      {"test_accuracy", eval.accuracy},
      {"train_loss", o.eval_only ? json(nullptr) : json(train_loss)},
      {"epoch_seconds", epoch_seconds},
      {"images_per_second", o.eval_only ? json(nullptr) : json(trained_images / total_seconds)},
      {"test_loss", eval.mean_loss},
      {"precision", o.precision},
      {"train_images", train ? train->count : 0},
      {"test_images", test.count},
      {"ranks", ranks},
      {"allreduce_seconds", allreduce_seconds}};
  std::printf("%s\n", line.dump().c_str());
  return porta_tools::stdout_written("porta-train") ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"porta-train: a small CNN trained on Fashion-MNIST with Porta's operator set"};
  app.add_option("--data", o.data, "Directory with the Fashion-MNIST IDX files (.gz or plain)")
      ->capture_default_str();
  app.add_option("--backend", o.backend,
                 "Backends to try, as PORTA_BACKEND (auto, cpu, cuda, hip, level_zero, opencl or a "
                 "comma list); overrides the environment");
  app.add_option("--epochs", o.epochs, "Passes over the training set")
      ->capture_default_str()
      ->transform(porta_tools::kDecimal)
      ->check(CLI::Range(1, 1000));
  app.add_option("--batch", o.batch, "Images per (micro-)batch")
      ->capture_default_str()
      ->transform(porta_tools::kDecimal)
      ->check(CLI::Range(int64_t(1), int64_t(4096)));
  app.add_option("--lr", o.lr, "Learning rate (default 0.001 for adam, 0.05 for sgd)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            char* end = nullptr;
            const double value = std::strtod(text.c_str(), &end);
            // Above 0 as the float training takes it (1e-300 is 0 there), at most 10.
            if (text.empty() || *end != '\0' || !(float(value) > 0.0f && value <= 10.0))
              return "'" + text + "' is not a number above 0 and at most 10";
            return "";
          },
          "(0, 10]"));
  app.add_option("--optimizer", o.optimizer, "sgd (momentum 0.9) or adam")
      ->capture_default_str()
      ->check(CLI::IsMember({"sgd", "adam"}));
  app.add_option("--seed", o.seed, "Seed of the initial weights and of the batch order")
      ->capture_default_str()
      ->transform(porta_tools::kDecimal);
  app.add_option("--grad-accum", o.grad_accum,
                 "Micro-batches whose gradients are summed per optimiser step (the step is that "
                 "of their mean)")
      ->capture_default_str()
      ->transform(porta_tools::kDecimal)
      ->check(CLI::Range(int64_t(1), int64_t(1024)));
  app.add_option("--precision", o.precision,
                 "f32, or bf16 (bf16 operands for conv and GEMM, fp32 master weights, fp32 "
                 "accumulation)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16"}));
  app.add_option("--checkpoint", o.checkpoint,
                 "Checkpoint file: written after training, read with --eval-only");
  app.add_flag("--eval-only", o.eval_only,
               "Evaluate the --checkpoint on the test set, no training");
  app.add_option("--predictions", o.predictions,
                 "Write the predicted class of each test image to this file, one per line");
  app.add_option("--train-limit", o.train_limit, "Use only the first N training images (0: all)")
      ->capture_default_str()
      ->transform(porta_tools::kDecimal)
      ->check(porta_tools::kAtMostInt64);
  app.add_option("--test-limit", o.test_limit, "Use only the first N test images (0: all)")
      ->capture_default_str()
      ->transform(porta_tools::kDecimal)
      ->check(porta_tools::kAtMostInt64);
  app.add_flag("!--no-progress", o.progress, "No progress bar on stderr");
  app.add_flag("--profile", o.profile,
               "Time each op of training alone (synchronising around it) and print the time per "
               "op kind on stderr");
  app.footer(
      "Prints one JSON line on stdout: backend, device, epochs, test_accuracy, train_loss, "
      "epoch_seconds, images_per_second (and test_loss, precision, train_images, test_images).\n"
      "Exit status: 0 success, 1 failure, 2 bad usage, 3 backend, op implementation or "
      "--precision bf16 not available here.");
  try {
    app.parse(argc, argv);
    if (o.eval_only && o.checkpoint.empty()) {
      throw CLI::ValidationError("--eval-only", "needs --checkpoint FILE to evaluate");
    }
    // NaN passes the range check, and a rate below float's smallest would train nothing.
    if (o.lr && !(std::isfinite(*o.lr) && float(*o.lr) > 0.0f)) {
      throw CLI::ValidationError("--lr", "must be a number in (0, 10] that a float can hold");
    }
    // The outputs are checked before the training that leads to them.
    if (!o.eval_only) porta_tools::check_output("--checkpoint", o.checkpoint);
    porta_tools::check_output("--predictions", o.predictions);
    porta_tools::check_apart("--predictions", o.predictions, "--checkpoint", o.checkpoint);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }

  int code = kExitFailure;
  try {
    code = run(o);
  } catch (const unavailable& e) {
    std::fprintf(stderr, "porta-train: unavailable: %s\n", e.what());
    code = kExitUnavailable;
  } catch (const usage_error& e) {
    std::fprintf(stderr, "porta-train: %s\n", e.what());
    code = kExitUsage;
  } catch (const unsupported_error& e) {
    std::fprintf(stderr, "porta-train: %s\n", e.what());
    code = kExitUnavailable;
  } catch (const porta::error& e) {
    std::fprintf(stderr, "porta-train: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "porta-train: %s\n", e.what());
  }
  porta_shutdown();
  return code;
}
