// The CPU plan of conv backward-weights (plugins/portable_ops/kernels/gemm_params.h:
// align_depth_blocks): its depth is batch x an image's output positions, and dy is read in place
// only where a depth block stays within one image. Over a sweep of layers and thread counts the
// aligned plan must still be a valid plan (the splits cover the depth exactly, the grid holds
// every group, the blocks fit the planned shared memory, even blocks for bf16), and where the
// image's positions have an even divisor between half the planned block and the block, every
// block must lie within one image.
#include <algorithm>
#include <catch2/catch.hpp>
#include <initializer_list>
#include <vector>

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

// balance_column_tiles: over the quick suite's layers and a few odd ones, each pass, the plan it
// returns is still a plan (columns covered by tiles of whole strips, the groups in the grid, the
// panels within shared memory, the rows, depth and splits as they were), its busiest thread
// computes no more than before, and the quick suite's uneven plans on 2 threads come out even.
TEST_CASE("conv plan: column tiles evened out over the threads", "[conv][plan]") {
  struct Gemm {
    int64_t m, n, k, period;
  };
  std::vector<Gemm> gemms;
  const int64_t layers[][7] = {// N, C, H, W, K, R, S ("same" padding, stride 1)
                               {4, 64, 56, 56, 64, 3, 3},  {4, 128, 28, 28, 128, 3, 3},
                               {16, 512, 7, 7, 512, 3, 3}, {16, 1024, 14, 14, 256, 1, 1},
                               {3, 8, 14, 14, 16, 3, 3},   {2, 16, 9, 9, 64, 3, 3},
                               {1, 3, 5, 7, 2, 3, 3},      {7, 33, 11, 13, 40, 1, 1}};
  for (const auto& l : layers) {
    const int64_t npq = l[0] * l[2] * l[3], crs = l[1] * l[5] * l[6];
    gemms.push_back({l[4], npq, crs, 0});                 // forward
    gemms.push_back({l[1], npq, l[4] * l[5] * l[6], 0});  // backward data
    gemms.push_back({l[4], crs, npq, l[2] * l[3]});       // backward weights
  }
  constexpr int64_t kShared = 256 * 1024;
  // Each plan as the group packs its rows of A (block_m of them beside B's panel), and with a
  // conv's weights packed ahead (conv.cpp: packed_a), where A takes no shared memory: in the
  // blocks planned for A packed per group (forward on AVX2) or in the deeper ones (ahead).
  for (const Gemm& g : gemms) {
    for (const int variant : {0, 1, 2}) {
      const bool ahead = variant == 2;
      for (int64_t threads : {1, 2, 3, 8}) {
        INFO("m " << g.m << ", n " << g.n << ", k " << g.k << ", threads " << threads
                  << ", variant " << variant);
        porta_ops::GemmTarget target{true, threads, kShared};
        GemmPlan before{};
        REQUIRE(porta_ops::plan_gemm(g.m, g.n, g.k, 1, target, porta_ops::kGemmPathNative, &before,
                                     false, ahead));
        if (g.period > 0) porta_ops::align_depth_blocks(g.period, g.m, g.n, g.k, 1, &before);
        GemmPlan plan = before;
        const int64_t a_rows = variant == 0 ? before.tiles.block_m : 0;
        porta_ops::balance_column_tiles(g.m, g.n, 1, threads, kShared, a_rows, &plan);
        const porta_ops::GemmTiles& t = plan.tiles;
        CHECK(t.tile_n % porta_ops::kCpuColumnMultiple == 0);
        CHECK(t.tiles_n * t.tile_n >= g.n);
        CHECK((t.tiles_n - 1) * t.tile_n < g.n);
        CHECK(t.tile_m == before.tiles.tile_m);
        CHECK(t.tile_k == before.tiles.tile_k);
        CHECK(t.block_m == before.tiles.block_m);
        CHECK(t.splits == before.tiles.splits);
        CHECK(plan.partial_floats == before.partial_floats);
        CHECK(plan.shared_bytes <= kShared);
        CHECK(int64_t(plan.shared_bytes) >= (a_rows + t.tile_n) * t.tile_k * 4);
        const int64_t groups = t.tiles_m * t.tiles_n * t.splits;
        CHECK(int64_t(plan.grid[0]) * plan.grid[1] * plan.grid[2] >= groups);
        CHECK(int64_t(plan.grid[0]) * plan.grid[1] * (plan.grid[2] - 1) < groups);
        const int64_t load = porta_ops::busiest_thread(g.m, g.n, 1, t, threads);
        CHECK(load <= porta_ops::busiest_thread(g.m, g.n, 1, before.tiles, threads));
        if (threads == 1) CHECK(t.tile_n == before.tiles.tile_n);
      }
    }
  }
  // 28x28x128 forward (13 tiles) and backward weights (8, the last a sliver); 56x56x64
  // backward weights (9): each thread now computes half.
  for (const Gemm& g :
       {Gemm{128, 3136, 1152, 0}, Gemm{128, 1152, 3136, 784}, Gemm{64, 576, 12544, 3136}}) {
    porta_ops::GemmTarget target{true, 2, kShared};
    GemmPlan plan{};
    REQUIRE(porta_ops::plan_gemm(g.m, g.n, g.k, 1, target, porta_ops::kGemmPathNative, &plan));
    if (g.period > 0) porta_ops::align_depth_blocks(g.period, g.m, g.n, g.k, 1, &plan);
    porta_ops::balance_column_tiles(g.m, g.n, 1, 2, kShared, plan.tiles.block_m, &plan);
    CHECK(porta_ops::busiest_thread(g.m, g.n, 1, plan.tiles, 2) * 2 == g.m * g.n);
  }
  // With the weights packed ahead in its deeper blocks, 28x28x128 backward data (13 tiles of 256,
  // where 64 rows of A beside 224 columns would not fit) comes out even too.
  {
    const Gemm g{128, 3136, 1152, 0};
    porta_ops::GemmTarget target{true, 2, kShared};
    GemmPlan plan{};
    REQUIRE(porta_ops::plan_gemm(g.m, g.n, g.k, 1, target, porta_ops::kGemmPathNative, &plan, false,
                                 true));
    CHECK(plan.tiles.tiles_n == 13);
    porta_ops::balance_column_tiles(g.m, g.n, 1, 2, kShared, 0, &plan);
    CHECK(porta_ops::busiest_thread(g.m, g.n, 1, plan.tiles, 2) * 2 == g.m * g.n);
  }
}

// plan_staged_window (backward weights as dw^T = im2col(x) x dy^T, x's rows staged): over the
// quick suite's layers and odd ones, on 1 to 64 threads, the plan covers the depth with whole
// blocks per split, holds B's panel and the staged rows of any block in its shared memory within
// the device's, keeps the tiles within kMaxStagedTileM rows and 256 columns, starts every block
// at an output row's start where a row fits a block, and gives the threads about two groups each.
TEST_CASE("conv plan: backward weights from staged rows", "[conv][plan]") {
  struct Layer {
    int64_t n, c, p, q, k, r, s, stride_h, stride_w, dilation_h, dilation_w;
  };
  const Layer layers[] = {
      {4, 64, 56, 56, 64, 3, 3, 1, 1, 1, 1},     {4, 128, 28, 28, 128, 3, 3, 1, 1, 1, 1},
      {16, 1024, 14, 14, 256, 1, 1, 1, 1, 1, 1}, {4, 16, 30, 30, 40, 3, 3, 1, 1, 1, 1},
      {1, 130, 16, 16, 8, 3, 3, 1, 1, 1, 1},     {1, 1, 3, 2000, 4, 3, 3, 1, 1, 1, 1},
      {2, 4, 11, 16, 6, 3, 3, 2, 1, 1, 1},       {2, 3, 16, 14, 5, 3, 3, 1, 1, 2, 2},
      {32, 3, 112, 112, 64, 7, 7, 1, 1, 1, 1},   {1, 1, 1, 14, 1, 1, 1, 1, 1, 1, 1},
      {16, 3, 112, 112, 64, 7, 7, 2, 2, 1, 1},   {16, 256, 28, 28, 128, 1, 1, 2, 2, 1, 1},
      {16, 128, 14, 14, 256, 3, 3, 2, 2, 1, 1},  {2, 5, 9, 15, 7, 3, 2, 1, 3, 1, 2},
      {1, 3, 7, 15, 4, 2, 2, 3, 3, 1, 1},
  };
  constexpr int64_t kShared = 256 * 1024;
  for (const Layer& l : layers) {
    const auto w = porta_ops::StagedWindow::of_layer(l.r, l.s, l.p, l.q, l.stride_h, l.stride_w,
                                                     l.dilation_h, l.dilation_w);
    // Strided across, a run of Q per tap across; else the taps' reach along the row.
    CHECK(w.width == (l.stride_w > 1 ? l.s * l.q : (l.s - 1) * l.dilation_w + l.q));
    // Strided down past the rows an output row reaches, the rows between are not staged.
    CHECK(w.row_step == std::min(l.stride_h, (l.r - 1) * l.dilation_h + 1));
    const int64_t m = l.c * l.r * l.s, n = l.k, k = l.n * l.p * l.q;
    for (int64_t threads : {1, 2, 8, 64}) {
      INFO("m " << m << ", n " << n << ", k " << k << ", Q " << l.q << ", threads " << threads);
      GemmPlan plan{};
      const porta_ops::GemmTarget target{true, threads, kShared};
      REQUIRE(porta_ops::plan_staged_window(m, n, k, w, target, porta_ops::kGemmPathNative, &plan));
      const porta_ops::GemmTiles& t = plan.tiles;
      CHECK(t.tile_m % porta_ops::kCpuRowMultiple == 0);
      CHECK(t.tile_m <= porta_ops::kMaxStagedTileM);
      CHECK(t.tile_n % porta_ops::kCpuColumnMultiple == 0);
      CHECK(t.tile_n <= 256);
      CHECK(t.tiles_m * t.tile_m >= m);
      CHECK((t.tiles_m - 1) * t.tile_m < m);
      CHECK(t.tiles_n * t.tile_n >= n);
      CHECK((t.tiles_n - 1) * t.tile_n < n);
      CHECK(t.tile_k >= 1);
      if (t.tile_k >= l.q) CHECK(t.tile_k % l.q == 0);
      if (t.splits > 1) CHECK(t.split_depth % t.tile_k == 0);
      CHECK(int64_t(t.splits) * t.split_depth >= k);
      CHECK(int64_t(t.splits - 1) * t.split_depth < k);
      CHECK(plan.partial_floats == (t.splits > 1 ? m * n * int64_t(t.splits) : 0));
      CHECK(int64_t(plan.shared_bytes) <= kShared);
      CHECK(int64_t(plan.shared_bytes) >= (t.tile_n * t.tile_k + w.floats(t.tile_m, t.tile_k)) * 4);
      // What the kernel stages for each row tile and blocks from anywhere in an image fits.
      for (int64_t i0 = 0; i0 < m; i0 += t.tile_m) {
        const int64_t last = std::min<int64_t>(i0 + t.tile_m, m) - 1;
        const int64_t channels = last / w.taps - i0 / w.taps + 1;
        for (int64_t kb : {int64_t{1}, int64_t{t.tile_k} / 2 + 1, int64_t{t.tile_k}}) {
          for (int64_t pos = 0; pos + kb <= w.positions; pos += std::max<int64_t>(1, l.q / 3)) {
            const int64_t out_rows = (pos + kb - 1) / l.q - pos / l.q + 1;
            const int64_t height = (out_rows - 1) * std::min(l.stride_h, w.reach_h) + w.reach_h;
            CHECK((t.tile_n * t.tile_k + channels * height * w.width) * 4 <=
                  int64_t(plan.shared_bytes));
          }
        }
      }
      const int64_t groups = t.tiles_m * t.tiles_n * t.splits;
      CHECK(int64_t(plan.grid[0]) * plan.grid[1] * plan.grid[2] >= groups);
      CHECK(int64_t(plan.grid[0]) * plan.grid[1] * (plan.grid[2] - 1) < groups);
      if (threads == 2 && k >= 4 * 512) CHECK(groups >= 3);
    }
  }
}

// Staged blocks copy their rows whole, so a plan whose blocks would take less than an output row
// (and fewer than 64 depths) is refused, and the plain plan takes the layer: DeepSpeech's 20x5
// filter of stride 2 over rows of 341 fitted blocks of one depth beside its staged rows.
TEST_CASE("conv plan: no staged rows for blocks of a few depths", "[conv][plan]") {
  const auto w = porta_ops::StagedWindow::of_layer(5, 20, 79, 341, 2, 2, 1, 1);
  const int64_t m = 100, n = 32, k = int64_t{32} * 79 * 341;
  GemmPlan plan{};
  for (int64_t shared : {int64_t{256} << 10, int64_t{512} << 10}) {
    const porta_ops::GemmTarget target{true, 2, shared};
    INFO("shared " << shared);
    CHECK_FALSE(
        porta_ops::plan_staged_window(m, n, k, w, target, porta_ops::kGemmPathNative, &plan));
  }
  // With room for blocks of a whole output row it plans.
  const porta_ops::GemmTarget roomy{true, 2, int64_t{4} << 20};
  REQUIRE(porta_ops::plan_staged_window(m, n, k, w, roomy, porta_ops::kGemmPathNative, &plan));
  CHECK(plan.tiles.tile_k >= 64);
}

// The same plan for pointwise layers (StagedWindow::in_place: x's rows read in place as A, nothing
// staged): where it is taken, every depth block lies within one image or is whole images (as
// deep as the room allows: whole images wherever one fits), the depth splits (the
// partials, not dw^T, take the micro-tiles' stores), and shared memory holds B's panel beside a
// padded partial panel of A, which is all that an A packed in blocks of kCpuRowMultiple rows
// would need; where no block size divides the image, or the depth does not split, it is refused.
TEST_CASE("conv plan: pointwise backward weights read x in place", "[conv][plan]") {
  struct Layer {
    int64_t n, c, p, q, k;
    bool taken_on_2_threads;
  };
  const Layer layers[] = {
      {16, 1024, 14, 14, 256, true}, {4, 256, 56, 56, 64, true},  {32, 20, 7, 7, 24, true},
      {1, 8, 40, 40, 16, true},      {16, 1200, 8, 8, 9, true},   {1, 4, 37, 37, 8, false},
      {1, 30, 14, 14, 12, false},    {8, 2048, 14, 14, 1024, false},
  };
  constexpr int64_t kShared = 256 * 1024;
  for (const Layer& l : layers) {
    const auto w = porta_ops::StagedWindow::in_place(l.p, l.q);
    CHECK_FALSE(w.staged());
    const int64_t m = l.c, n = l.k, k = l.n * l.p * l.q;
    for (int64_t threads : {1, 2, 8, 64}) {
      INFO("m " << m << ", n " << n << ", k " << k << ", Q " << l.q << ", threads " << threads);
      GemmPlan plan{};
      const porta_ops::GemmTarget target{true, threads, kShared};
      const bool taken =
          porta_ops::plan_staged_window(m, n, k, w, target, porta_ops::kGemmPathNative, &plan);
      if (threads == 2) CHECK(taken == l.taken_on_2_threads);
      if (!taken) continue;
      const porta_ops::GemmTiles& t = plan.tiles;
      CHECK(t.splits > 1);
      CHECK(t.split_depth % t.tile_k == 0);
      // Within one image, or whole images where one fits (the rows kernel takes them as runs).
      const int64_t pq = l.p * l.q;
      CHECK((pq % t.tile_k == 0 || t.tile_k % pq == 0));
      CHECK(t.block_m == porta_ops::kCpuRowMultiple);
      CHECK(t.tiles_m * t.tile_m >= m);
      CHECK(t.tiles_n * t.tile_n >= n);
      CHECK(int64_t(plan.shared_bytes) <= kShared);
      CHECK(int64_t(plan.shared_bytes) >=
            (t.tile_n + porta_ops::kCpuRowMultiple) * int64_t(t.tile_k) * 4);
    }
  }
}
