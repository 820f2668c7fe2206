// The ops porta-bench measures, the --shape syntax, and the suites (DeepBench's training shapes).
#include <algorithm>
#include <charconv>
#include <stdexcept>

#include "bench.h"

namespace bench {

namespace {

struct OpInfo {
  Op op;
  const char* name;
  const char* api_name;
};

constexpr OpInfo kOps[] = {
    {Op::gemm, "gemm", "gemm"},
    {Op::conv_fwd, "conv_fwd", "conv2d_forward"},
    {Op::conv_bwd_data, "conv_bwd_data", "conv2d_backward_data"},
    {Op::conv_bwd_weights, "conv_bwd_weights", "conv2d_backward_weights"},
    {Op::softmax, "softmax", "softmax_forward"},
    {Op::softmax_bwd, "softmax_bwd", "softmax_backward"},
    {Op::cross_entropy, "cross_entropy", "cross_entropy"},
    {Op::max_pool, "max_pool", "max_pool2d_forward"},
    {Op::max_pool_bwd, "max_pool_bwd", "max_pool2d_backward"},
    {Op::relu, "relu", "relu_forward"},
    {Op::relu_bwd, "relu_bwd", "relu_backward"},
    {Op::bias_add, "bias_add", "bias_add"},
    {Op::bias_bwd, "bias_bwd", "bias_backward"},
    {Op::adam, "adam", "adam_update"},
    {Op::all_reduce, "all_reduce", "comm_all_reduce"},
    {Op::peer_copy, "peer_copy", "memcpy_async"},
};

const OpInfo& info(Op op) {
  for (const OpInfo& i : kOps)
    if (i.op == op) return i;
  return kOps[0];
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t end = text.find(separator, start);
    parts.push_back(text.substr(start, end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return parts;
}

// A decimal integer in [min, 2^31): large enough for any shape, small enough that products of
// a few never overflow int64.
int64_t integer(const std::string& text, const char* what, int64_t min) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) {
    throw std::invalid_argument(std::string(what) + " is '" + text + "', not an integer");
  }
  if (value < min || value >= (int64_t{1} << 31)) {
    throw std::invalid_argument(std::string(what) + " is " + text + "; it must be in [" +
                                std::to_string(min) + ", 2^31)");
  }
  return value;
}

int64_t conv_out(int64_t in, int64_t pad, int64_t kernel, int64_t stride) {
  return (in + 2 * pad - kernel) / stride + 1;
}

Shape gemm(int64_t m, int64_t n, int64_t k, const char* op, int max_reps = 0,
           bool gpu_only = false) {
  Shape s = parse_shape(
      Op::gemm, std::to_string(m) + "," + std::to_string(n) + "," + std::to_string(k) + "," + op);
  s.max_reps = max_reps;
  s.gpu_only = gpu_only;
  return s;
}

Shape conv(Op op, std::initializer_list<int64_t> v) {
  std::string text;
  for (int64_t x : v) {
    if (!text.empty()) text += ',';
    text += std::to_string(x);
  }
  return parse_shape(op, text);
}

}  // namespace

const std::vector<Op>& all_ops() {
  static const std::vector<Op> ops = [] {
    std::vector<Op> out;
    for (const OpInfo& i : kOps)
      if (!is_multi_device(i.op)) out.push_back(i.op);
    return out;
  }();
  return ops;
}

const char* op_name(Op op) { return info(op).name; }
const char* op_api_name(Op op) { return info(op).api_name; }

std::optional<Op> op_from_name(const std::string& name) {
  for (const OpInfo& i : kOps)
    if (name == i.name) return i.op;
  return std::nullopt;
}

bool is_conv(Op op) {
  return op == Op::conv_fwd || op == Op::conv_bwd_data || op == Op::conv_bwd_weights;
}
bool is_row_op(Op op) {
  return op == Op::softmax || op == Op::softmax_bwd || op == Op::cross_entropy;
}
bool is_multi_device(Op op) { return op == Op::all_reduce || op == Op::peer_copy; }
bool is_pool(Op op) { return op == Op::max_pool || op == Op::max_pool_bwd; }
bool is_bandwidth_op(Op op) {
  return is_row_op(op) || is_pool(op) || op == Op::relu || op == Op::relu_bwd ||
         op == Op::bias_add || op == Op::bias_bwd || op == Op::adam;
}

const char* dtype_name(porta_dtype_t dtype) {
  switch (dtype) {
    case PORTA_DTYPE_F32:
      return "f32";
    case PORTA_DTYPE_BF16:
      return "bf16";
    case PORTA_DTYPE_F16:
      return "f16";
  }
  return "?";
}

size_t dtype_size(porta_dtype_t dtype) { return dtype == PORTA_DTYPE_F32 ? 4 : 2; }

std::string shape_syntax() {
  return "gemm: M,N,K[,NN|NT|TN|TT] (op(A) is MxK, op(B) KxN; N: as stored, T: transposed; "
         "default NN); conv_*: W,H,C,N,K,S,R,pw,ph,sw,sh (input width, height, channels, batch, "
         "filters, filter width, filter height, padding w/h, stride w/h, as in DeepBench); "
         "softmax, softmax_bwd, cross_entropy: ROWSxCOLS; max_pool, max_pool_bwd: N,C,H,W,K,S,P "
         "(batch, channels, input height, width, a KxK window, stride, padding); relu, relu_bwd, "
         "adam: COUNT; bias_add, bias_bwd: NxCxS (batch, channels, spatial size); all_reduce, "
         "peer_copy: BYTES[KiB|MiB|GiB]";
}

Shape parse_shape(Op op, const std::string& text) {
  Shape s;
  s.op = op;
  const std::string where = std::string("--shape '") + text + "' for " + op_name(op) + ": ";
  try {
    if (op == Op::gemm) {
      const auto p = split(text, ',');
      if (p.size() != 3 && p.size() != 4)
        throw std::invalid_argument("expected M,N,K[,NN|NT|TN|TT]");
      s.m = integer(p[0], "M", 1);
      s.n = integer(p[1], "N", 1);
      s.k = integer(p[2], "K", 1);
      if (p.size() == 4) {
        const std::string& t = p[3];
        if (t.size() != 2 || (t[0] != 'N' && t[0] != 'T') || (t[1] != 'N' && t[1] != 'T'))
          throw std::invalid_argument("the transposes are '" + t + "'; expected NN, NT, TN or TT");
        s.trans_a = t[0] == 'T';
        s.trans_b = t[1] == 'T';
      }
    } else if (is_conv(op)) {
      const auto p = split(text, ',');
      if (p.size() != 11) {
        throw std::invalid_argument("expected 11 integers W,H,C,N,K,S,R,pw,ph,sw,sh, got " +
                                    std::to_string(p.size()));
      }
      s.w = integer(p[0], "W", 1);
      s.h = integer(p[1], "H", 1);
      s.c = integer(p[2], "C", 1);
      s.batch = integer(p[3], "N", 1);
      s.filters = integer(p[4], "K", 1);
      s.s = integer(p[5], "S", 1);
      s.r = integer(p[6], "R", 1);
      s.pw = integer(p[7], "pw", 0);
      s.ph = integer(p[8], "ph", 0);
      s.sw = integer(p[9], "sw", 1);
      s.sh = integer(p[10], "sh", 1);
      if (s.w + 2 * s.pw < s.s || s.h + 2 * s.ph < s.r)
        throw std::invalid_argument("the filter is larger than the padded input");
    } else if (is_multi_device(op)) {
      // A byte count with an optional binary suffix; all_reduce sums fp32 elements.
      int64_t unit = 1;
      std::string digits = text;
      for (const auto& [suffix, scale] : {std::pair{"KiB", 10}, {"MiB", 20}, {"GiB", 30}}) {
        const std::string sfx = suffix;
        if (digits.size() > sfx.size() &&
            digits.compare(digits.size() - sfx.size(), sfx.size(), sfx) == 0) {
          digits.resize(digits.size() - sfx.size());
          unit = int64_t{1} << scale;
          break;  // one suffix: "1MiBKiB" is no number
        }
      }
      s.size = integer(digits, "BYTES", 1) * unit;
      if (op == Op::all_reduce && s.size % 4 != 0)
        throw std::invalid_argument("the size is not a whole number of fp32 elements (4 bytes)");
    } else if (is_pool(op)) {
      const auto p = split(text, ',');
      if (p.size() != 7) {
        throw std::invalid_argument("expected 7 integers N,C,H,W,K,S,P, got " +
                                    std::to_string(p.size()));
      }
      s.batch = integer(p[0], "N", 1);
      s.c = integer(p[1], "C", 1);
      s.h = integer(p[2], "H", 1);
      s.w = integer(p[3], "W", 1);
      s.r = s.s = integer(p[4], "K", 1);
      s.sh = s.sw = integer(p[5], "S", 1);
      s.ph = s.pw = integer(p[6], "P", 0);
      if (s.ph >= s.r) throw std::invalid_argument("the padding must be smaller than the window");
      if (s.h + 2 * s.ph < s.r || s.w + 2 * s.pw < s.s)
        throw std::invalid_argument("the window is larger than the padded input");
    } else if (op == Op::relu || op == Op::relu_bwd || op == Op::adam) {
      s.rows = 1;
      s.cols = integer(text, "COUNT", 1);
    } else if (op == Op::bias_add || op == Op::bias_bwd) {
      const auto p = split(text, 'x');
      if (p.size() != 3) throw std::invalid_argument("expected NxCxS");
      s.batch = integer(p[0], "N", 1);
      s.c = integer(p[1], "C", 1);
      s.cols = integer(p[2], "S", 1);
    } else {
      const auto p = split(text, 'x');
      if (p.size() != 2) throw std::invalid_argument("expected ROWSxCOLS");
      s.rows = integer(p[0], "ROWS", 1);
      s.cols = integer(p[1], "COLS", 1);
    }
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(where + e.what());
  }
  // Keep every buffer's element count within what one allocation of the API can describe.
  if (s.bytes() > double(int64_t{1} << 40))
    throw std::invalid_argument(where + "the buffers would exceed 1 TiB");
  return s;
}

std::string Shape::text() const {
  if (op == Op::gemm) {
    return std::to_string(m) + "," + std::to_string(n) + "," + std::to_string(k) + "," +
           (trans_a ? "T" : "N") + (trans_b ? "T" : "N");
  }
  if (is_conv(op)) {
    std::string out;
    for (int64_t v : {w, h, c, batch, filters, s, r, pw, ph, sw, sh}) {
      if (!out.empty()) out += ',';
      out += std::to_string(v);
    }
    return out;
  }
  if (is_pool(op)) {
    std::string out;
    for (int64_t v : {batch, c, h, w, r, sh, ph}) {
      if (!out.empty()) out += ',';
      out += std::to_string(v);
    }
    return out;
  }
  if (op == Op::relu || op == Op::relu_bwd || op == Op::adam) return std::to_string(cols);
  if (op == Op::bias_add || op == Op::bias_bwd) {
    return std::to_string(batch) + "x" + std::to_string(c) + "x" + std::to_string(cols);
  }
  if (is_multi_device(op)) {
    for (const auto& [suffix, scale] : {std::pair{"GiB", 30}, {"MiB", 20}, {"KiB", 10}})
      if (size % (int64_t{1} << scale) == 0) return std::to_string(size >> scale) + suffix;
    return std::to_string(size);
  }
  return std::to_string(rows) + "x" + std::to_string(cols);
}

porta_conv2d_desc_t Shape::conv_desc(porta_dtype_t dtype) const {
  porta_conv2d_desc_t d{};
  d.struct_size = sizeof d;
  d.batch = batch;
  d.in_channels = c;
  d.in_height = h;
  d.in_width = w;
  d.out_channels = filters;
  d.kernel_height = r;
  d.kernel_width = s;
  d.pad_h = ph;
  d.pad_w = pw;
  d.stride_h = sh;
  d.stride_w = sw;
  d.dilation_h = 1;
  d.dilation_w = 1;
  d.dtype = dtype;
  return d;
}

double Shape::flops() const {
  if (op == Op::gemm) return 2.0 * m * n * k;
  if (is_conv(op)) {
    const double p = conv_out(h, ph, r, sh), q = conv_out(w, pw, s, sw);
    return 2.0 * batch * filters * c * r * s * p * q;
  }
  return 0.0;
}

double Shape::bytes(porta_dtype_t dtype) const {
  const double f = sizeof(float);
  const double in = static_cast<double>(dtype_size(dtype));
  switch (op) {
    case Op::gemm:
      return in * (double(m) * k + double(k) * n) + f * double(m) * n;
    case Op::conv_fwd:
    case Op::conv_bwd_data:
    case Op::conv_bwd_weights: {
      const double p = conv_out(h, ph, r, sh), q = conv_out(w, pw, s, sw);
      const double x = double(batch) * c * h * w, wt = double(filters) * c * r * s,
                   y = double(batch) * filters * p * q;
      // The two inputs in `dtype`, the output in fp32.
      if (op == Op::conv_fwd) return in * (x + wt) + f * y;
      if (op == Op::conv_bwd_data) return in * (y + wt) + f * x;
      return in * (x + y) + f * wt;
    }
    case Op::softmax:
      return 2.0 * f * rows * cols;  // x in, y out
    case Op::softmax_bwd:
      return 3.0 * f * rows * cols;  // y, dy in, dx out
    case Op::cross_entropy:          // logits, labels in; dlogits out
      return 2.0 * f * rows * cols + 4.0 * rows;
    case Op::max_pool:      // x in, y out
    case Op::max_pool_bwd:  // x, dy in; dx out
    {
      const double x = double(batch) * c * h * w;
      const double y = double(batch) * c * conv_out(h, ph, r, sh) * conv_out(w, pw, s, sw);
      return op == Op::max_pool ? f * (x + y) : f * (2.0 * x + y);
    }
    case Op::relu:  // x in, y out
      return 2.0 * f * cols;
    case Op::relu_bwd:  // x, dy in; dx out
      return 3.0 * f * cols;
    case Op::adam:  // weights, grads, m, v in; weights, m, v out
      return 7.0 * f * cols;
    case Op::bias_add:  // x, bias in; y out
      return f * (2.0 * batch * c * cols + c);
    case Op::bias_bwd:  // dy in, dbias out
      return f * (double(batch) * c * cols + c);
    case Op::all_reduce:  // the buffer, as nccl-tests counts it
    case Op::peer_copy:
      return double(size);
  }
  return 0.0;
}

std::vector<Shape> suite_shapes(const std::string& suite, Op op) {
  const bool quick = suite == "quick";
  if (suite != "quick" && suite != "deepbench")
    throw std::invalid_argument("unknown suite '" + suite + "'");
  std::vector<Shape> out;
  if (is_multi_device(op)) {
    for (const char* size : {"1MiB", "4MiB", "16MiB", "64MiB"})
      out.push_back(parse_shape(op, size));
    if (!quick) out.push_back(parse_shape(op, "256MiB"));
  } else if (op == Op::gemm) {
    if (quick) {
      out = {gemm(1760, 128, 1760, "NN"), gemm(2560, 64, 2560, "NN"), gemm(3072, 128, 1024, "TN"),
             gemm(35, 8457, 2560, "NN"), gemm(1024, 1024, 1024, "NN")};
    } else {
      // The largest take seconds per call on a CPU: fewer repetitions there.
      out = {gemm(1760, 128, 1760, "NN"),      gemm(2560, 64, 2560, "NN"),
             gemm(3072, 128, 1024, "TN"),      gemm(1760, 7000, 1760, "NN", 10),
             gemm(4096, 7000, 4096, "NN", 5),  gemm(5124, 9124, 2560, "TN", 5),
             gemm(2048, 7133, 2048, "NT", 10), gemm(35, 8457, 2560, "NN"),
             gemm(7680, 24000, 2560, "NN", 3), gemm(1024, 16, 500000, "NN", 10),
             gemm(1024, 1024, 1024, "NN"),     gemm(8192, 8192, 8192, "NN", 0, true)};
    }
  } else if (is_conv(op)) {
    // W, H, C, N, K, S, R, pw, ph, sw, sh; the quick suite takes batch 4 for the two large
    // layers.
    if (quick) {
      out = {conv(op, {56, 56, 64, 4, 64, 3, 3, 1, 1, 1, 1}),
             conv(op, {28, 28, 128, 4, 128, 3, 3, 1, 1, 1, 1}),
             conv(op, {7, 7, 512, 16, 512, 3, 3, 1, 1, 1, 1}),
             conv(op, {14, 14, 1024, 16, 256, 1, 1, 0, 0, 1, 1})};
    } else {
      out = {conv(op, {224, 224, 3, 16, 64, 7, 7, 3, 3, 2, 2}),
             conv(op, {56, 56, 64, 16, 64, 3, 3, 1, 1, 1, 1}),
             conv(op, {28, 28, 128, 16, 128, 3, 3, 1, 1, 1, 1}),
             conv(op, {7, 7, 512, 16, 512, 3, 3, 1, 1, 1, 1}),
             conv(op, {56, 56, 256, 16, 128, 1, 1, 0, 0, 2, 2}),
             conv(op, {14, 14, 1024, 16, 256, 1, 1, 0, 0, 1, 1}),
             conv(op, {7, 7, 512, 16, 2048, 1, 1, 0, 0, 1, 1}),
             conv(op, {700, 161, 1, 32, 32, 20, 5, 0, 0, 2, 2})};
    }
  } else if (is_pool(op)) {
    // porta-train's two poolings (batch 64) and a 3x3 stride-2 one whose windows overlap.
    for (const char* size : {"64,32,28,28,2,2,0", "64,64,14,14,2,2,0", "32,64,56,56,3,2,1"})
      out.push_back(parse_shape(op, size));
  } else if (op == Op::relu || op == Op::relu_bwd) {
    for (const char* size : {"1605632", "802816"})  // porta-train's 64x32x28x28, 64x64x14x14
      out.push_back(parse_shape(op, size));
  } else if (op == Op::bias_add || op == Op::bias_bwd) {
    for (const char* size : {"64x32x784", "64x64x196", "64x128x1"})  // porta-train's layers
      out.push_back(parse_shape(op, size));
  } else if (op == Op::adam) {
    for (const char* size : {"401408", "18432"})  // porta-train's fc1 and conv2 weights
      out.push_back(parse_shape(op, size));
  } else {
    std::vector<std::string> sizes = {"32768x256", "16384x1024", "4096x4096"};
    if (!quick) {
      for (const char* big : {"8192x32000", "4096x131072", "1024x262144"}) sizes.push_back(big);
    }
    for (const std::string& size : sizes) out.push_back(parse_shape(op, size));
  }
  return out;
}

}  // namespace bench
