// The porta-train program, run as a child process on generated data: its JSON line, its answers
// to bad flags and bad data, and checkpoints that move between op implementations.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "../child_process.h"
#include "checkpoint.h"
#include "cli_checks.h"
#include "train_test.h"

using namespace train_test;
using Catch::Matchers::Contains;
using nlohmann::json;

namespace {

// A data directory with a small training and test split.
struct Data {
  Data() {
    write_split(dir.path().string(), "train", synthetic_set(640, 1));
    write_split(dir.path().string(), "t10k", synthetic_set(300, 2));
  }
  std::string path() const { return dir.path().string(); }
  ScratchDir dir;
};

const std::vector<std::string> kCpu = {"PORTA_BACKEND=cpu"};

json last_line(const std::string& out) {
  const size_t end = out.find_last_not_of('\n');
  REQUIRE(end != std::string::npos);
  const size_t begin = out.rfind('\n', end);
  return json::parse(out.substr(begin == std::string::npos ? 0 : begin + 1, end + 1));
}

std::vector<std::string> lines_of(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  std::vector<std::string> out;
  std::string line;
  for (uint8_t b : bytes) {
    if (b == '\n') {
      out.push_back(line);
      line.clear();
    } else {
      line += char(b);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("cli: one JSON line with the documented fields", "[cli]") {
  Data data;
  const Run r = run_porta_train({"--data", data.path(), "--epochs", "2", "--batch", "32"}, kCpu);
  REQUIRE(r.status == 0);
  CHECK(r.out.find('\n') == r.out.size() - 1);  // exactly one line on stdout
  const json j = last_line(r.out);
  CHECK(j.at("backend") == "cpu");
  CHECK(j.at("device").is_string());
  CHECK_FALSE(j.at("device").get<std::string>().empty());
  CHECK(j.at("epochs") == 2);
  CHECK(j.at("test_accuracy").is_number());
  CHECK(j.at("test_accuracy").get<double>() > 0.8);
  CHECK(j.at("test_accuracy").get<double>() <= 1.0);
  CHECK(j.at("train_loss").is_number());
  CHECK(j.at("train_loss").get<double>() > 0.0);
  REQUIRE(j.at("epoch_seconds").is_array());
  CHECK(j.at("epoch_seconds").size() == 2);
  for (const json& t : j.at("epoch_seconds")) CHECK(t.get<double>() > 0.0);
  CHECK(j.at("images_per_second").get<double>() > 0.0);
  CHECK(j.at("train_images") == 640);
  CHECK(j.at("test_images") == 300);
  // The progress goes to stderr, one line per epoch when it is not a terminal.
  CHECK_THAT(r.err, Contains("epoch 1/2") && Contains("epoch 2/2") && Contains("img/s"));
}

TEST_CASE("cli: the same seed gives the same run, and gradient accumulation trains too",
          "[cli][determinism]") {
  Data data;
  const std::vector<std::string> args = {"--data",  data.path(), "--epochs",    "1",
                                         "--batch", "16",        "--optimizer", "sgd",
                                         "--lr",    "0.01",      "--seed",      "7"};
  const Run a = run_porta_train(args, kCpu), b = run_porta_train(args, kCpu);
  std::vector<std::string> accumulated = args;
  accumulated.insert(accumulated.end(), {"--grad-accum", "2"});
  const Run c = run_porta_train(accumulated, kCpu);
  REQUIRE(a.status == 0);
  REQUIRE(b.status == 0);
  REQUIRE(c.status == 0);
  const json ja = last_line(a.out), jb = last_line(b.out), jc = last_line(c.out);
  CHECK(ja.at("train_loss").get<double>() == jb.at("train_loss").get<double>());
  CHECK(ja.at("test_loss").get<double>() == jb.at("test_loss").get<double>());
  CHECK(ja.at("test_accuracy").get<double>() == jb.at("test_accuracy").get<double>());
  // Half as many steps of twice the images: it still learns, and is another run.
  CHECK(jc.at("test_accuracy").get<double>() > 0.5);
  CHECK(jc.at("train_loss").get<double>() != ja.at("train_loss").get<double>());
}

TEST_CASE("cli: bad flags are usage errors", "[cli]") {
  Data data;
  const std::vector<std::vector<std::string>> bad = {{"--optimizer", "rmsprop"},
                                                     {"--precision", "f64"},
                                                     {"--epochs", "0"},
                                                     {"--batch", "-3"},
                                                     {"--lr", "-1"},
                                                     {"--lr", "nan"},
                                                     {"--lr", "1e-300"},  // 0 as a float
                                                     {"--lr", "abc"},
                                                     {"--lr", "11"},
                                                     {"--train-limit", "9223372036854775808"},
                                                     {"--checkpoint", "no/such/dir/x.ckpt"},
                                                     {"--predictions", "/"},
                                                     {"--grad-accum", "0"},
                                                     {"--eval-only"},
                                                     {"--no-such-flag"},
                                                     {"--epochs", "two"},
                                                     {"--epochs", "0x2"},
                                                     {"--seed", "-1"},
                                                     {"--seed", "18446744073709551616"},
                                                     {"--backend", "foo"}};
  for (std::vector<std::string> args : bad) {
    args.insert(args.begin(), {"--data", data.path()});
    const Run r = run_porta_train(args, kCpu);
    CHECK(r.status == 2);
    CHECK(r.out.empty());
    CHECK_FALSE(r.err.empty());
  }
}

TEST_CASE("cli: integers are decimal, and outputs cannot replace what they must not", "[cli]") {
  Data data;
  // Leading zeros: decimal, where CLI11 alone reads octal (064 would be 52 images).
  Run r = run_porta_train({"--data", data.path(), "--epochs", "02", "--train-limit", "064"}, kCpu);
  REQUIRE(r.status == 0);
  CHECK(last_line(r.out).at("epochs") == 2);
  CHECK(last_line(r.out).at("train_images") == 64);

  ScratchDir out;
  // A checkpoint is renamed over the file it names: a pipe (or a device) is refused before
  // training, and so are predictions written over the checkpoint.
  const std::string fifo = out.file("pipe");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  r = run_porta_train({"--data", data.path(), "--checkpoint", fifo}, kCpu);
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Contains("not a regular file"));
  const std::string spelled = (out.path() / "." / "a.ckpt").string();
  r = run_porta_train(
      {"--data", data.path(), "--checkpoint", out.file("a.ckpt"), "--predictions", spelled}, kCpu);
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Contains("same file as --checkpoint"));

  // Through a link, the checkpoint replaces the file linked to and the link stays.
  const std::string target = out.file("target.ckpt"), link = out.file("link.ckpt");
  write_file(target, {1, 2, 3});
  std::filesystem::create_symlink(target, link);
  r = run_porta_train(
      {"--data", data.path(), "--epochs", "1", "--train-limit", "64", "--checkpoint", link}, kCpu);
  REQUIRE(r.status == 0);
  CHECK(std::filesystem::is_symlink(link));
  CHECK(porta_train::read_checkpoint(target).size() == 8);

  // A file larger than this model's checkpoint is refused before it is read.
  write_file(out.file("large.ckpt"), std::vector<uint8_t>(4 << 20, 0));
  r = run_porta_train(
      {"--data", data.path(), "--eval-only", "--checkpoint", out.file("large.ckpt")}, kCpu);
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("more than the") && Contains("of a checkpoint of this model"));
}

TEST_CASE("cli: a checkpoint in a sticky directory that another user owns is refused", "[cli]") {
  // Root may replace any file, so the check runs as another user, in a child process.
  if (geteuid() != 0) {
    skip("needs root, to own a file that another user then cannot replace");
    return;
  }
  ScratchDir out;
  REQUIRE(::chmod(out.path().c_str(), 01777) == 0);
  const std::string owned = out.file("root.ckpt");
  write_file(owned, {1, 2, 3});
  // Writable by everyone, so that only the sticky directory stands in the way of a rename.
  REQUIRE(::chmod(owned.c_str(), 0666) == 0);
  constexpr uid_t kNobody = 65534;
  const auto refused_as_nobody = [&](const std::string& path, const std::string& reason) {
    return porta_test::in_child([&] {
      if (::setresgid(kNobody, kNobody, kNobody) != 0 || ::setresuid(kNobody, kNobody, kNobody))
        return porta_test::expect(false, "cannot become user 65534");
      try {
        porta_tools::check_output("--checkpoint", path);
      } catch (const CLI::ValidationError& e) {
        return porta_test::expect(std::string(e.what()).find(reason) != std::string::npos,
                                  std::string("refused for another reason: ") + e.what());
      }
      return porta_test::expect(false, path + " was not refused");
    });
  };
  CHECK(refused_as_nobody(owned, "belongs to another user in a sticky directory"));
  // Through a link that the user may write beside, the file linked to decides.
  ScratchDir other;
  REQUIRE(::chmod(other.path().c_str(), 0777) == 0);
  const std::string link = other.file("link.ckpt");
  std::filesystem::create_symlink(owned, link);
  CHECK(refused_as_nobody(link, "belongs to another user in a sticky directory"));
  // A file of one's own there, and a new one, are fine.
  REQUIRE(porta_test::in_child([&] {
    if (::setresgid(kNobody, kNobody, kNobody) != 0 || ::setresuid(kNobody, kNobody, kNobody))
      return porta_test::expect(false, "cannot become user 65534");
    write_file(out.file("mine.ckpt"), {1});
    try {
      porta_tools::check_output("--checkpoint", out.file("mine.ckpt"));
      porta_tools::check_output("--checkpoint", out.file("new.ckpt"));
    } catch (const CLI::ValidationError& e) {
      return porta_test::expect(false, e.what());
    }
    return true;
  }));
}

namespace {

// The message check_output or check_apart throws, or "" where it accepts.
template <typename Check>
std::string refusal(Check&& check) {
  try {
    check();
  } catch (const CLI::ValidationError& e) {
    return e.what();
  }
  return "";
}

// Runs in dir as the working directory, then goes back.
struct InDirectory {
  std::filesystem::path before = std::filesystem::current_path();
  explicit InDirectory(const std::filesystem::path& dir) { std::filesystem::current_path(dir); }
  ~InDirectory() { std::filesystem::current_path(before); }
};

}  // namespace

// Output names are the files they resolve to: a new relative name is fine, two spellings of one
// file are one file, and a link names the file it links to, even one not made yet.
TEST_CASE("cli: output names are taken as the files they resolve to", "[cli]") {
  ScratchDir out;
  InDirectory here(out.path());
  const auto output = [](const std::string& path) {
    return refusal([&] { porta_tools::check_output("--checkpoint", path); });
  };
  const auto apart = [](const std::string& a, const std::string& b) {
    return refusal([&] { porta_tools::check_apart("--predictions", a, "--checkpoint", b); });
  };
  CHECK(output("cnn.ckpt") == "");  // new, in the working directory
  CHECK_THAT(apart("same", "./same"), Contains("names the same file as --checkpoint"));
  CHECK_THAT(apart("same", out.file("same")), Contains("names the same file"));
  // A link to a file not made yet, and a hard link of an existing one.
  std::filesystem::create_symlink("later.ckpt", out.file("link"));
  CHECK_THAT(apart(out.file("link"), "later.ckpt"), Contains("names the same file"));
  write_file(out.file("one"), {1});
  std::filesystem::create_hard_link(out.file("one"), out.file("two"));
  CHECK_THAT(apart("one", "two"), Contains("names the same file"));
  CHECK(apart("one", "later.ckpt") == "");
  // A link into a directory that does not exist cannot be written through.
  std::filesystem::create_symlink("nowhere/x.ckpt", out.file("dangling"));
  CHECK_THAT(output("dangling"), Contains("does not exist"));
  // A name with no room for the file written beside it first fails now, not after the work.
  CHECK_THAT(output(std::string(250, 'b')), Contains("too long"));
  // Written through the link: the link stays, the file it names is made.
  porta_tools::write_whole_file(out.file("link"), "written");
  CHECK(std::filesystem::is_symlink(out.file("link")));
  CHECK(std::filesystem::file_size(out.file("later.ckpt")) == 7);
}

TEST_CASE("cli: bad data, a bad checkpoint and an impossible batch fail with a message", "[cli]") {
  Data data;
  ScratchDir other;
  Run r = run_porta_train({"--data", other.path().string(), "--epochs", "1"}, kCpu);
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("t10k-images-idx3-ubyte.gz: no such file"));

  write_file(other.file("t10k-images-idx3-ubyte"), {0, 0, 8, 3, 0, 0});
  write_gzip(other.file("t10k-labels-idx1-ubyte.gz"), idx_bytes({1}, {3}));
  r = run_porta_train({"--data", other.path().string(), "--epochs", "1"}, kCpu);
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("truncated"));

  write_gzip(other.file("t10k-images-idx3-ubyte.gz"), idx_bytes({1, 2, 2}, {1, 2, 3, 4}));
  r = run_porta_train({"--data", other.path().string(), "--epochs", "1"}, kCpu);
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("images are 2x2, the network takes 28x28"));

  write_file(other.file("bad.ckpt"), {'P', 'O', 'R', 'T', 'A', 'C', 'K', 'P', 1});
  r = run_porta_train(
      {"--data", data.path(), "--eval-only", "--checkpoint", other.file("bad.ckpt")}, kCpu);
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("bad.ckpt: truncated"));

  r = run_porta_train({"--data", data.path(), "--batch", "4000"}, kCpu);
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("needs more than the training set's 640"));
  CHECK(r.out.empty());
}

TEST_CASE("cli: a checkpoint evaluates to the same predictions after reloading", "[cli]") {
  Data data;
  ScratchDir out;
  Run r = run_porta_train({"--data", data.path(), "--epochs", "1", "--batch", "32", "--checkpoint",
                           out.file("a.ckpt"), "--predictions", out.file("train.pred")},
                          kCpu);
  REQUIRE(r.status == 0);
  const double trained = last_line(r.out).at("test_accuracy");
  r = run_porta_train({"--data", data.path(), "--eval-only", "--checkpoint", out.file("a.ckpt"),
                       "--predictions", out.file("eval.pred")},
                      kCpu);
  REQUIRE(r.status == 0);
  const json j = last_line(r.out);
  CHECK(j.at("test_accuracy").get<double>() == trained);
  CHECK(j.at("epochs") == 0);
  CHECK(j.at("train_loss").is_null());
  CHECK(lines_of(out.file("eval.pred")).size() == 300);
  CHECK(lines_of(out.file("eval.pred")) == lines_of(out.file("train.pred")));
  CHECK(porta_train::read_checkpoint(out.file("a.ckpt")).size() == 8);
}

// Trained with the portable ops, evaluated with the vendor libraries (PORTA_OPS=vendor): the same
// accuracy and the same prediction for every image. Skipped, with the reason, where the vendor op
// plugin for the CPU is not available.
TEST_CASE("cli: a checkpoint from the portable ops evaluates the same with the vendor ops",
          "[cli][vendor]") {
  Data data;
  ScratchDir out;
  Run r = run_porta_train({"--data", data.path(), "--epochs", "1", "--batch", "32", "--checkpoint",
                           out.file("a.ckpt"), "--predictions", out.file("portable.pred")},
                          {"PORTA_BACKEND=cpu", "PORTA_OPS=portable"});
  REQUIRE(r.status == 0);
  const double portable = last_line(r.out).at("test_accuracy");
  r = run_porta_train({"--data", data.path(), "--eval-only", "--checkpoint", out.file("a.ckpt"),
                       "--predictions", out.file("vendor.pred")},
                      {"PORTA_BACKEND=cpu", "PORTA_OPS=vendor"});
  if (r.status == 3) {  // porta-train's exit status for "not available here"
    skip("the vendor op implementation is not available: " + r.err);
    return;
  }
  REQUIRE(r.status == 0);
  CHECK(last_line(r.out).at("test_accuracy").get<double>() == portable);
  const std::vector<std::string> a = lines_of(out.file("portable.pred"));
  const std::vector<std::string> b = lines_of(out.file("vendor.pred"));
  REQUIRE(a.size() == 300);
  REQUIRE(b.size() == a.size());
  size_t differ = 0;
  for (size_t i = 0; i < a.size(); ++i) differ += a[i] != b[i];
  CHECK(differ == 0);
}

// Mixed precision: bf16 operands, fp32 master weights and accumulation, still learns. Skipped,
// with the reason, where the operator set in use has no bf16 GEMM, convolution or conversion.
TEST_CASE("cli: --precision bf16 trains to an accuracy close to fp32's", "[cli][bf16]") {
  Data data;
  const Run bf16 = run_porta_train(
      {"--data", data.path(), "--epochs", "2", "--batch", "32", "--precision", "bf16"}, kCpu);
  if (bf16.status == 3) {
    CHECK_THAT(bf16.err, Contains("not supported by this build's operator set"));
    skip("bf16 is not available: " + bf16.err);
    return;
  }
  REQUIRE(bf16.status == 0);
  const Run f32 = run_porta_train({"--data", data.path(), "--epochs", "2", "--batch", "32"}, kCpu);
  REQUIRE(f32.status == 0);
  const json a = last_line(bf16.out), b = last_line(f32.out);
  CHECK(a.at("precision") == "bf16");
  CHECK(a.at("test_accuracy").get<double>() > 0.8);
  CHECK(a.at("test_accuracy").get<double>() > b.at("test_accuracy").get<double>() - 0.05);
  CHECK(a.at("train_loss").get<double>() < 1.5 * b.at("train_loss").get<double>() + 0.05);
}
