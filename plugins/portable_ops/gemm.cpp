// Host side of GEMM: the launch plan (kernels/gemm_params.h) for the stream's device, and the
// launch of gemm_<dtype>. The plan is shared with the convolutions (conv.cpp), which run on the
// same engine.
#include <atomic>
#include <optional>
#include <string>

#include "kernels/gemm_params.h"
#include "portable_ops.h"

namespace porta::portable_ops {

// PORTA_OPS_GEMM_PATH=tiled makes the CPU run the engine's portable tiled path (the source GPUs
// run) instead of its packed one: slow, but it lets that path be tested where no GPU is.
// PORTA_OPS_GEMM_PATH=widened keeps the packed path but widens bf16 inputs to fp32 also where the
// CPU has a bf16 dot product (what other CPUs run). Unset, empty or "native" keeps the packed
// path as is; anything else is refused by every GEMM and conv call.
int32_t requested_gemm_path() {
  static constexpr int32_t kPaths[] = {porta_ops::kGemmPathNative, porta_ops::kGemmPathTiled,
                                       porta_ops::kGemmPathWidened};
  // A bad value throws from the initialiser, so every call refuses it again.
  static const int32_t path =
      kPaths[setting_choice("PORTA_OPS_GEMM_PATH", {"native", "tiled", "widened"})];
  return path;
}

namespace {

// The stream's scratch for a plan's split-K partials (plan.tiles.partials) and, after them (a
// whole number of cache lines on), extra_floats more, whose start it returns (nullptr if none).
float* provide_scratch(const Op& context, porta_ops::GemmPlan& plan, int64_t extra_floats,
                       std::optional<Scratch>& scratch) {
  const int64_t partial_floats = (plan.partial_floats + 15) / 16 * 16;
  if (partial_floats + extra_floats == 0) return nullptr;
  scratch.emplace(
      scratch_for(context, static_cast<size_t>(partial_floats + extra_floats) * sizeof(float)));
  if (plan.partial_floats > 0) plan.tiles.partials = scratch->as<float>();
  return extra_floats > 0 ? scratch->as<float>() + partial_floats : nullptr;
}

// Gives a plan about to be launched its number (GemmTiles::launch): the CPU's groups reuse a
// block of B that the thread's previous group of the same launch packed, and only of that one.
void number_launch(porta_ops::GemmPlan& plan) {
  static std::atomic<uint64_t> launches{0};
  plan.tiles.launch = launches.fetch_add(1, std::memory_order_relaxed) + 1;
}

// What the plans size their tiles for: the stream's device, its threads and group memory.
porta_ops::GemmTarget gemm_target(const Op& context) {
  const porta_device_properties_t& props = *context.properties;
  return {runs_on_host(context), props.compute_units > 0 ? props.compute_units : 1,
          props.shared_memory_per_group};
}

// plan_engine_launch, whether A is an fp32 matrix stored along the depth (plan_gemm's
// a_in_place) and which operands are stored as panels at a stride (plan_gemm's panels).
porta_ops::GemmPlan plan_launch(const Op& context, const char* op, int64_t m, int64_t n, int64_t k,
                                int64_t batch, int64_t depth_period, bool a_in_place,
                                std::optional<Scratch>& scratch, float** packed_a = nullptr,
                                bool deepen_ahead = true, int32_t panels = 0,
                                int64_t extra_floats = 0, float** extra = nullptr) {
  const porta_device_properties_t& props = *context.properties;
  const porta_ops::GemmTarget target = gemm_target(context);
  // A GPU runs the tiled path: groups of kTiledItems x kTiledItems work-items, which the
  // tensor-core variant also counts on (8 warps of 32).
  constexpr int32_t kItems = porta_ops::kTiledItems;
  if (!target.host &&
      (props.max_work_group_size < kItems * kItems || props.max_work_group_dims[0] < kItems ||
       props.max_work_group_dims[1] < kItems)) {
    throw porta::error(PORTA_ERROR_UNSUPPORTED,
                       std::string(op) + ": the device's work-groups are smaller than the " +
                           std::to_string(kItems) + "x" + std::to_string(kItems) +
                           " the GEMM engine needs");
  }
  porta_ops::GemmPlan plan;
  bool fits = porta_ops::plan_gemm(m, n, k, batch, target, requested_gemm_path(), &plan, a_in_place,
                                   false, panels);
  // Packing A ahead costs a launch (about 10 us on the CPU): it pays where the column tiles would
  // pack A many times over, not on small layers.
  constexpr double kMinRepacked = 1 << 18;  // elements
  const bool ahead = packed_a && plan.tiles.path != porta_ops::kGemmPathTiled &&
                     static_cast<double>(plan.tiles.tiles_n - 1) * m * k >= kMinRepacked;
  if (fits && ahead && deepen_ahead) {
    fits = porta_ops::plan_gemm(m, n, k, batch, target, requested_gemm_path(), &plan, a_in_place,
                                true);
  }
  if (!fits) {
    throw porta::error(PORTA_ERROR_UNSUPPORTED,
                       std::string(op) + ": the problem needs more work-groups than a grid holds");
  }
  if (depth_period > 0) porta_ops::align_depth_blocks(depth_period, m, n, k, batch, &plan);
  // The packed A takes a row tile's rows (rounded up to any ISA build's MR) by the whole depth
  // per row tile, after the partials.
  // extra_floats more after it (a whole number of cache lines on).
  const int64_t packed_floats =
      ahead ? (plan.tiles.tiles_m * (plan.tiles.tile_m + porta_ops::kCpuRowMultiple) * k + 15) /
                  16 * 16
            : 0;
  float* const after = provide_scratch(context, plan, packed_floats + extra_floats, scratch);
  if (packed_a) *packed_a = packed_floats > 0 ? after : nullptr;
  if (extra) *extra = extra_floats > 0 ? after + packed_floats : nullptr;
  number_launch(plan);
  return plan;
}

}  // namespace

// The engine's launch for an m x n x k product over `batch` entries on the stream's device. With
// split-K the partial products go to the stream's scratch buffer, which `scratch` then holds
// until the caller has queued both kernels. A depth_period > 0 says that A's rows run along the
// depth in stretches of that many (porta_ops::align_depth_blocks). Given packed_a, the CPU's
// packed path gets room there for A packed once for all tiles where that pays (ConvArgs::
// packed_a; nullptr elsewhere), and with deepen_ahead the deeper depth blocks of an A that takes
// no shared memory (else the blocks, and so the order of the sums, of A packed per group). Given
// extra, extra_floats more of the scratch for the caller, whose start it gets. Throws
// porta::error if the grid cannot hold it.
porta_ops::GemmPlan plan_engine_launch(const Op& context, const char* op, int64_t m, int64_t n,
                                       int64_t k, int64_t batch, int64_t depth_period,
                                       std::optional<Scratch>& scratch, float** packed_a,
                                       bool deepen_ahead, int64_t extra_floats, float** extra) {
  return plan_launch(context, op, m, n, k, batch, depth_period, false, scratch, packed_a,
                     deepen_ahead, 0, extra_floats, extra);
}

// Conv backward weights with its window staged as A on the CPU (porta_ops::plan_staged_window):
// the plan and the scratch of its partials; false where the stream's device does not run the
// packed path or where the tiles do not fit (the caller then plans the plain GEMM).
bool plan_staged_launch(const Op& context, int64_t m, int64_t n, int64_t k,
                        const porta_ops::StagedWindow& window, std::optional<Scratch>& scratch,
                        porta_ops::GemmPlan* plan) {
  const int32_t path = requested_gemm_path();
  if (!runs_on_host(context) || path == porta_ops::kGemmPathTiled) return false;
  if (!porta_ops::plan_staged_window(m, n, k, window, gemm_target(context), path, plan)) {
    return false;
  }
  provide_scratch(context, *plan, 0, scratch);
  number_launch(*plan);
  return true;
}

// Whether the stream's device runs the CPU's own kernels (the packed path, and the direct
// convolution beside it) rather than the GPU builds' tiled path.
bool runs_packed_path(const Op& context) {
  return runs_on_host(context) && requested_gemm_path() != porta_ops::kGemmPathTiled;
}

// Whether bf16 products on the stream's device run on the CPU's matrix units (AMX tiles, in the
// packed path's GEMM only).
bool bf16_on_matrix_units(const Op& context) {
  return runs_packed_path(context) && requested_gemm_path() == porta_ops::kGemmPathNative &&
         (context.properties->capabilities & PORTA_CAPABILITY_MATRIX_CORES) != 0;
}

porta_status_t Ops::gemm(const Op* op, const porta_gemm_args_t* gemm) {
  return guarded("porta_gemm", [&] {
    const porta_gemm_desc_t& d = *gemm->desc;
    std::optional<Scratch> scratch;
    const bool f32 = d.dtype == PORTA_DTYPE_F32;
    const bool a_in_place = f32 && d.trans_a == PORTA_NO_TRANSPOSE;
    const int32_t panels = f32 && d.trans_b == PORTA_NO_TRANSPOSE ? porta_ops::kGemmPanelsB : 0;
    const porta_ops::GemmPlan plan = plan_launch(*op, "porta_gemm", d.m, d.n, d.k, d.batch_count, 0,
                                                 a_in_place, scratch, nullptr, true, panels);
    porta_ops::GemmArgs args{};
    args.a = gemm->a;
    args.b = gemm->b;
    args.c = gemm->c;
    args.m = d.m, args.n = d.n, args.k = d.k;
    args.lda = d.lda, args.ldb = d.ldb, args.ldc = d.ldc;
    args.stride_a = d.stride_a, args.stride_b = d.stride_b, args.stride_c = d.stride_c;
    args.batch = d.batch_count;
    args.alpha = d.alpha, args.beta = d.beta;
    args.trans_a = d.trans_a == PORTA_TRANSPOSE;
    args.trans_b = d.trans_b == PORTA_TRANSPOSE;
    args.tiles = plan.tiles;
    static const char* const kernels[] = {"gemm_f32", "gemm_f16", "gemm_bf16"};
    launch(*op, kernels[d.dtype], dim3(plan.grid[0], plan.grid[1], plan.grid[2]),
           dim3(plan.group[0], plan.group[1]), plan.shared_bytes, args);
    if (plan.tiles.splits > 1) {
      launch(*op, "gemm_f32_reduce",
             dim3(plan.reduce_grid[0], plan.reduce_grid[1], plan.reduce_grid[2]),
             dim3(porta_ops::kReduceItems), 0, args);
    }
  });
}

}  // namespace porta::portable_ops
