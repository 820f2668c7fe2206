// The CPU plan of conv backward-weights (plugins/portable_ops/kernels/gemm_params.h:
// align_depth_blocks): its depth is batch x an image's output positions, and dy is read in place
// only where a depth block stays within one image. Over a sweep of layers and thread counts the
// aligned plan must still be a valid plan (the splits cover the depth exactly, the grid holds
// every group, the blocks fit the planned shared memory, even blocks for bf16), and where the
// image's positions have an even divisor between half the planned block and the block, every
// block must lie within one image.
#include <algorithm>
#include <catch2/catch.hpp>

#include "gemm_params.h"

namespace {

using porta_ops::GemmPlan;

struct Layer {
  int64_t batch, positions, out_channels, taps;  // N, P*Q, K, C*R*S
};

GemmPlan plan_for(const Layer& l, int64_t threads, bool aligned) {
  porta_ops::GemmTarget target{true, threads, 256 * 1024};
  GemmPlan plan{};
  const int64_t k = l.batch * l.positions;
  REQUIRE(porta_ops::plan_gemm(l.out_channels, l.taps, k, 1, target, porta_ops::kGemmPathNative,
                               &plan));
  if (aligned) porta_ops::align_depth_blocks(l.positions, l.out_channels, l.taps, k, 1, &plan);
  return plan;
}

bool has_divisor(int64_t period, int64_t tile_k) {
  for (int64_t d = tile_k; 2 * d >= tile_k; --d) {
    if (d % 2 == 0 && period % d == 0) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("conv plan: backward-weights depth blocks stay within one image", "[conv][plan]") {
  const Layer layers[] = {
      {4, 56 * 56, 64, 64 * 9}, {4, 28 * 28, 128, 128 * 9}, {16, 7 * 7, 512, 512 * 9},
      {16, 14 * 14, 256, 1024}, {3, 18 * 18, 16, 4 * 9},    {2, 23 * 23, 8, 3 * 9},
      {8, 16 * 18, 4, 2 * 9},   {64, 12 * 12, 3, 4 * 9},    {1, 1, 1, 1},
      {70001, 4, 2, 1},         {32, 112 * 112, 64, 27},    {2, 33 * 33, 40, 20 * 25},
  };
  int64_t aligned_layers = 0;
  for (const Layer& l : layers) {
    for (int64_t threads : {1, 2, 8, 64}) {
      INFO("N " << l.batch << ", P*Q " << l.positions << ", K " << l.out_channels << ", CRS "
                << l.taps << ", threads " << threads);
      const GemmPlan before = plan_for(l, threads, false);
      const GemmPlan plan = plan_for(l, threads, true);
      const porta_ops::GemmTiles& t = plan.tiles;
      const int64_t k = l.batch * l.positions;
      // Still a plan: the splits cover the depth, whole blocks each, the groups fit the grid.
      CHECK(t.tile_k >= 1);
      CHECK(t.tile_k <= before.tiles.tile_k);
      CHECK(plan.shared_bytes == before.shared_bytes);
      if (t.splits > 1) CHECK(t.split_depth % t.tile_k == 0);
      CHECK(t.splits <= before.tiles.splits);
      CHECK(int64_t(t.splits) * t.split_depth >= k);
      CHECK(int64_t(t.splits - 1) * t.split_depth < k);
      CHECK(plan.partial_floats ==
            (t.splits > 1 ? l.out_channels * l.taps * int64_t(t.splits) : 0));
      const int64_t groups = t.tiles_m * t.tiles_n * t.splits;
      CHECK(int64_t(plan.grid[0]) * plan.grid[1] * plan.grid[2] >= groups);
      CHECK(int64_t(plan.grid[0]) * plan.grid[1] * (plan.grid[2] - 1) < groups);
      if (t.tile_k < k) CHECK(t.tile_k % 2 == 0);
      if (t.tile_k == before.tiles.tile_k) {
        CHECK(t.split_depth == before.tiles.split_depth);
        CHECK(t.splits == before.tiles.splits);
      }
      // Where an even divisor was within reach, no block crosses from one image into the next.
      if (k > before.tiles.tile_k && has_divisor(l.positions, before.tiles.tile_k)) {
        ++aligned_layers;
        for (int64_t split = 0; split < t.splits; ++split) {
          const int64_t begin = split * t.split_depth, end = std::min(begin + t.split_depth, k);
          for (int64_t d0 = begin; d0 < end; d0 += t.tile_k) {
            const int64_t last = std::min(d0 + t.tile_k, end) - 1;
            CHECK(d0 / l.positions == last / l.positions);
          }
        }
      }
    }
  }
  CHECK(aligned_layers >= 8);  // the sweep reaches the aligning branch
}
