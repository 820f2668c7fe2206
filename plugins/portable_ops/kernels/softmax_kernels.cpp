// Kernels: softmax and log-softmax over rows, their gradients, and softmax cross-entropy.
//
// Launch shape (softmax.cpp picks it): a group of group_size(0) x group_size(1) work-items
// handles group_size(1) consecutive rows, group_size(0) items per row, group_size(0) a power of
// two; groups are numbered over a grid that may wrap into y. Each item walks its share of a row
// (porta_ops::walk), the group combines the items' partial results with a tree in shared memory,
// and a last inner loop writes the row.
//
// A row that one work-item takes whole (the CPU's launch, and short rows on a GPU) and that fits
// in its cache goes another way (cached_rows), in the last inner loop: its maximum, then
// e^(x - max) summed and stored, then the stored terms scaled, three passes of which only the
// first reads memory. That is one exponential per element instead of the online normaliser's two
// (one to sum, one to write), and on a CPU the exponentials, not memory, were the bound.
#include "common.h"

using porta_ops::as_lanes;
using porta_ops::kLanes;
using porta_ops::kLowest;
using porta_ops::kMaxItems;
using porta_ops::Lanes;
using porta_ops::VectorParts;
using porta_ops::kParts;

namespace {

// The running normaliser (max, sum of exponentials) of the elements of row x that item takes in
// porta_ops::walk(): kChunk of its blocks at a time (one rescale per chunk, and on a GPU kChunk
// loads in flight), then the blocks left over one by one, then the partial block.
PORTA_DEVICE_FUNCTION void row_normaliser(const float* x, int64_t cols, uint32_t item, uint32_t items,
                                 float& m, float& s) {
  constexpr uint32_t kChunk = 4;
  float lane_m[kLanes], lane_s[kLanes];
  for (uint32_t lane = 0; lane < kLanes; ++lane) {
    lane_m[lane] = kLowest;
    lane_s[lane] = 0.0f;
  }
  const int64_t blocks = cols / kLanes;
  const int64_t stride = items;
  int64_t b = item;
  for (; b + (kChunk - 1) * stride < blocks; b += kChunk * stride) {
    for (uint32_t lane = 0; lane < kLanes; ++lane) {
      float v[kChunk];
      for (uint32_t k = 0; k < kChunk; ++k) v[k] = x[(b + k * stride) * kLanes + lane];
      porta_ops::online_add_many(lane_m[lane], lane_s[lane], v);
    }
  }
  for (; b < blocks; b += stride) {
    for (uint32_t lane = 0; lane < kLanes; ++lane) {
      porta_ops::online_add(lane_m[lane], lane_s[lane], x[b * kLanes + lane]);
    }
  }
  if (kLanes > 1 && int64_t(item) == blocks % items) {
    const uint32_t rest = uint32_t(cols - blocks * kLanes);
    for (uint32_t lane = 0; lane < rest; ++lane) {
      porta_ops::online_add(lane_m[lane], lane_s[lane], x[blocks * kLanes + lane]);
    }
  }
  // Merge the lanes: their maximum, then their sums scaled to it.
  float folded[kLanes];
  for (uint32_t lane = 0; lane < kLanes; ++lane) folded[lane] = lane_m[lane];
  m = porta_ops::max_lanes(folded);
  for (uint32_t lane = 0; lane < kLanes; ++lane) {
    lane_s[lane] *= porta_ops::exp_nonpositive(lane_m[lane] - m);
  }
  s = porta_ops::sum_lanes(lane_s);
}

// The longest row a work-item takes in three passes (cached_rows): its input and output, 512 KiB,
// stay in a CPU core's level-2 cache between the passes. Longer rows read their input twice
// from memory rather than their output three times.
constexpr int64_t kCachedRow = 65536;

// Whether this group's rows take the cached path: one work-item per row, and rows short enough.
PORTA_DEVICE_FUNCTION bool cached_rows(uint32_t items, int64_t cols) {
  return items == 1 && cols <= kCachedRow;
}

#if PORTA_TARGET_CPU
// Folds the lanes of v with op in porta_ops::fold_lanes' halving tree (low half op high half, so
// the same sums), kept in registers: the array form stores and reloads at every level, which
// was a tenth of a short row's time. The levels above one vector fold whole parts of v.
template <class V, class Op>
PORTA_DEVICE_FUNCTION float fold(V v, Op op) {
  if constexpr (sizeof(V) == sizeof(float)) {
    float out;
    __builtin_memcpy(&out, &v, sizeof out);
    return out;
  } else {
    typedef float Half __attribute__((vector_size(sizeof(V) / 2)));
    Half low, high;
    __builtin_memcpy(&low, &v, sizeof low);
    __builtin_memcpy(&high, reinterpret_cast<const char*>(&v) + sizeof low, sizeof high);
    return fold(op(low, high), op);
  }
}
template <class Op>
PORTA_DEVICE_FUNCTION float fold(VectorParts v, Op op) {
  for (uint32_t width = kParts / 2; width > 0; width /= 2) {
    for (uint32_t p = 0; p < width; ++p) v.part[p] = op(v.part[p], v.part[p + width]);
  }
  return fold(v.part[0], op);
}

PORTA_DEVICE_FUNCTION float sum_of(Lanes v) {
  return fold(v, [](auto low, auto high) { return low + high; });
}

// As porta_ops::max_lanes: a NaN lane is passed over.
PORTA_DEVICE_FUNCTION float max_of(Lanes v) {
  return fold(v, [](auto low, auto high) { return high > low ? high : low; });
}
#else
PORTA_DEVICE_FUNCTION float sum_of(Lanes v) { return v; }
PORTA_DEVICE_FUNCTION float max_of(Lanes v) { return v; }
#endif

using porta_ops::larger;
using porta_ops::load_lanes;

// A row's passes after the first run from the cache, so the exponentials' pass prefetches memory
// ahead(cols) elements further on (porta_ops::prefetch): it streams in while they are computed,
// instead of waiting for them.
using porta_ops::prefetch;

// How far ahead the cached passes prefetch: the next row, or for short rows the row about 8 KiB
// on, since one short row is computed in less time than memory takes to answer.
PORTA_DEVICE_FUNCTION int64_t ahead(int64_t cols) { return cols > 2048 ? cols : 2048; }

// The maximum of row x, one work-item walking all of it (kLowest if every element is -infinity,
// so that x - max stays -infinity, never NaN). Four running maxima, so that the compare of one
// block does not wait for the previous block's.
PORTA_DEVICE_FUNCTION float row_max(const float* x, int64_t cols) {
  constexpr uint32_t kWays = 4;
  const Lanes lowest = porta_ops::splat_lanes(kLowest);
  Lanes way_m[kWays];
  for (uint32_t k = 0; k < kWays; ++k) way_m[k] = lowest;
  int64_t c = 0;
  for (; c + kWays * kLanes <= cols; c += kWays * kLanes) {
    for (uint32_t k = 0; k < kWays; ++k)
      way_m[k] = larger(load_lanes(x + c + k * kLanes), way_m[k]);
  }
  Lanes m = larger(larger(way_m[0], way_m[1]), larger(way_m[2], way_m[3]));
  for (; c + kLanes <= cols; c += kLanes) m = larger(load_lanes(x + c), m);
  float row_m = max_of(m);
  for (; c < cols; ++c) row_m = porta_ops::pick(x[c] > row_m, x[c], row_m);
  return row_m;
}

// The sum of e^(x[c] - m) over row x, one work-item walking all of it; each term is also stored
// in terms[c] when terms is not null (terms may be x).
PORTA_DEVICE_FUNCTION float row_sum_exp(const float* x, int64_t cols, float m, float* terms) {
  Lanes sum = {};
  const int64_t distance = ahead(cols);
  porta_ops::walk_blocks(cols, 0, 1, [&](int64_t first, auto count) {
    prefetch(x + first + distance);
    float e[kLanes] = {};
    for (uint32_t lane = 0; lane < count; ++lane) e[lane] = x[first + lane];
    for (uint32_t lane = 0; lane < count; ++lane) e[lane] = porta_ops::exp_nonpositive(e[lane] - m);
    sum = porta_ops::add(sum, as_lanes(e));
    if (terms) {
      for (uint32_t lane = 0; lane < count; ++lane) terms[first + lane] = e[lane];
    }
  });
  return sum_of(sum);
}

// Combines the normalisers part_m/part_s[row * items + item] of each row into its item 0, a
// halving tree with the barrier of each inner loop between levels. items is a power of two.
PORTA_DEVICE_FUNCTION void reduce_normalisers(float* part_m, float* part_s, uint32_t items) {
  for (uint32_t half = items / 2; half > 0; half /= 2) {
    porta::inner([&](uint32_t item, uint32_t row) {
      if (item < half) {
        const uint32_t i = row * items + item;
        porta_ops::online_merge(part_m[i], part_s[i], part_m[i + half], part_s[i + half]);
      }
    });
  }
}

// Each row's maximum and the sum of exp(x - maximum), for the rows from first_row one per
// group_size(1) slot: afterwards part_m[r * items] and part_s[r * items] hold row first_row + r's.
// Nothing for cached rows, which the kernel's last inner loop takes whole (the same for the
// whole group, so no barrier is skipped by some of its items only).
PORTA_DEVICE_FUNCTION void row_normalisers(const float* x, int64_t rows, int64_t cols, int64_t first_row,
                                  uint32_t items, float* part_m, float* part_s) {
  if (cached_rows(items, cols)) return;
  porta::inner([&](uint32_t item, uint32_t r) {
    const int64_t row = first_row + r;
    float m = kLowest, s = 0.0f;
    if (row < rows) row_normaliser(x + row * cols, cols, item, items, m, s);
    part_m[r * items + item] = m;
    part_s[r * items + item] = s;
  });
  reduce_normalisers(part_m, part_s, items);
}

// Sums part[row * items + item] of each row into its item 0, a halving tree as in
// reduce_normalisers.
PORTA_DEVICE_FUNCTION void reduce_sums(float* part, uint32_t items) {
  for (uint32_t half = items / 2; half > 0; half /= 2) {
    porta::inner([&](uint32_t item, uint32_t row) {
      if (item < half) part[row * items + item] += part[row * items + item + half];
    });
  }
}

// The sum of a[c] * b[c] (b == nullptr: of a[c]) over the elements of a row that item takes.
PORTA_DEVICE_FUNCTION float row_dot(const float* a, const float* b, int64_t cols, uint32_t item,
                                    uint32_t items) {
  Lanes sum = {};
  if (b) {
    porta_ops::walk_blocks(cols, item, items, [&](int64_t first, auto count) {
      float terms[kLanes] = {};
      for (uint32_t lane = 0; lane < count; ++lane) terms[lane] = a[first + lane] * b[first + lane];
      sum = porta_ops::add(sum, as_lanes(terms));
    });
  } else {
    porta_ops::walk_blocks(cols, item, items, [&](int64_t first, auto count) {
      float terms[kLanes] = {};
      for (uint32_t lane = 0; lane < count; ++lane) terms[lane] = a[first + lane];
      sum = porta_ops::add(sum, as_lanes(terms));
    });
  }
  return sum_of(sum);
}

}  // namespace

// y = softmax(x) or log_softmax(x) over each row; y may be x. One pass over a row finds its
// maximum and sum together (online normaliser), a second writes y.
PORTA_KERNEL(softmax_forward, int64_t rows, int64_t cols, int32_t log_softmax, const float* x,
             float* y) {
  PORTA_SHARED float part_m[kMaxItems];
  PORTA_SHARED float part_s[kMaxItems];
  const uint32_t items = porta::group_size(0);
  const int64_t first_row = porta_ops::group_index() * porta::group_size(1);

  row_normalisers(x, rows, cols, first_row, items, part_m, part_s);
  porta::inner([&](uint32_t item, uint32_t r) {
    const int64_t row = first_row + r;
    if (row >= rows) return;
    const float* xr = x + row * cols;
    float* yr = y + row * cols;
    if (cached_rows(items, cols)) {
      const float m = row_max(xr, cols);
      if (log_softmax) {
        const float log_s = logf(row_sum_exp(xr, cols, m, nullptr));
        porta_ops::map(cols, 0, 1, xr, yr, [&](int64_t, float v) { return (v - m) - log_s; });
      } else {
        const float scale = 1.0f / row_sum_exp(xr, cols, m, yr);
        porta_ops::map(cols, 0, 1, yr, yr, [&](int64_t, float e) { return e * scale; });
      }
      return;
    }
    const float m = part_m[r * items];
    const float s = part_s[r * items];
    if (log_softmax) {
      // (x - m) - log(s), in that order: m + log(s) would lose log(s) next to a large m.
      const float log_s = logf(s);
      porta_ops::map(cols, item, items, xr, yr, [&](int64_t, float v) { return (v - m) - log_s; });
    } else {
      const float scale = 1.0f / s;
      porta_ops::map(cols, item, items, xr, yr,
                     [&](int64_t, float v) { return porta_ops::exp_nonpositive(v - m) * scale; });
    }
  });
}

// From the forward output y and dy: softmax dx = y * (dy - sum(dy * y)); log-softmax
// dx = dy - exp(y) * sum(dy). dx may be dy.
PORTA_KERNEL(softmax_backward, int64_t rows, int64_t cols, int32_t log_softmax, const float* y,
             const float* dy, float* dx) {
  PORTA_SHARED float part[kMaxItems];
  const uint32_t items = porta::group_size(0);
  const int64_t first_row = porta_ops::group_index() * porta::group_size(1);

  if (!cached_rows(items, cols)) {  // as in row_normalisers
    porta::inner([&](uint32_t item, uint32_t r) {
      const int64_t row = first_row + r;
      float sum = 0.0f;
      if (row < rows) {
        sum = row_dot(dy + row * cols, log_softmax ? nullptr : y + row * cols, cols, item, items);
      }
      part[r * items + item] = sum;
    });
    reduce_sums(part, items);
  }
  porta::inner([&](uint32_t item, uint32_t r) {
    const int64_t row = first_row + r;
    if (row >= rows) return;
    const float* yr = y + row * cols;
    const float* dyr = dy + row * cols;
    float* dxr = dx + row * cols;
    // A cached row's sum reads it from memory, and the pass below from the cache. Asking for
    // the next row's lines there, as the forward's exponentials do, was slower: this pass has
    // no arithmetic for memory to overlap.
    const float sum = cached_rows(items, cols)
                          ? row_dot(dyr, log_softmax ? nullptr : yr, cols, 0, 1)
                          : part[r * items];
    if (log_softmax) {
      porta_ops::map(cols, item, items, yr, dyr, dxr, [&](int64_t, float yv, float dyv) {
        return dyv - porta_ops::exp_f32(yv) * sum;
      });
    } else {
      porta_ops::map(cols, item, items, yr, dyr, dxr,
                     [&](int64_t, float yv, float dyv) { return yv * (dyv - sum); });
    }
  });
}

// Per row: row_loss[row] = logsumexp(logits[row]) - logits[row][label], and, when dlogits is not
// NULL, dlogits[row] = (softmax(logits[row]) - onehot(label)) * inv_rows. A label outside
// [0, cols) gives a NaN loss and a NaN row of dlogits.
PORTA_KERNEL(cross_entropy_rows, int64_t rows, int64_t cols, const float* logits,
             const int32_t* labels, float* row_loss, float* dlogits, float inv_rows) {
  PORTA_SHARED float part_m[kMaxItems];
  PORTA_SHARED float part_s[kMaxItems];
  const uint32_t items = porta::group_size(0);
  const int64_t first_row = porta_ops::group_index() * porta::group_size(1);

  row_normalisers(logits, rows, cols, first_row, items, part_m, part_s);
  porta::inner([&](uint32_t item, uint32_t r) {
    const int64_t row = first_row + r;
    if (row >= rows) return;
    const float* xr = logits + row * cols;
    float* dr = dlogits ? dlogits + row * cols : nullptr;
    const int64_t label = labels[row];
    const bool valid = label >= 0 && label < cols;
    if (!valid) {
      if (item == 0) row_loss[row] = NAN;
      if (dr) porta_ops::walk(cols, item, items, [&](int64_t c, uint32_t) { dr[c] = NAN; });
      return;
    }
    if (cached_rows(items, cols)) {
      const float m = row_max(xr, cols);
      const float x_label = xr[label];
      const float s = row_sum_exp(xr, cols, m, dr);
      row_loss[row] = logf(s) - (x_label - m);
      if (!dr) return;
      const float e_label = dr[label];  // exp_nonpositive(x_label - m), stored by row_sum_exp
      const float scale = inv_rows / s;
      porta_ops::map(cols, 0, 1, dr, dr, [&](int64_t, float e) { return e * scale; });
      dr[label] = (e_label / s - 1.0f) * inv_rows;
      return;
    }
    const float m = part_m[r * items];
    const float s = part_s[r * items];
    if (item == 0) row_loss[row] = logf(s) - (xr[label] - m);
    if (!dr) return;
    const float scale = inv_rows / s;
    porta_ops::map(cols, item, items, xr, dr,
                   [&](int64_t, float v) { return porta_ops::exp_nonpositive(v - m) * scale; });
    // The label's element, by the item that wrote it.
    if (porta_ops::walker_of(label, items) == item) {
      dr[label] = (porta_ops::exp_nonpositive(xr[label] - m) / s - 1.0f) * inv_rows;
    }
  });
}

// out[0] = the mean of values[0, n), summed in a fixed order (deterministic): one group,
// group_size(0) items (a power of two) each summing its share, then a tree.
PORTA_KERNEL(mean_reduce, int64_t n, const float* values, float* out) {
  PORTA_SHARED float part[kMaxItems];
  const uint32_t items = porta::group_size(0);
  porta::inner([&](uint32_t item) { part[item] = row_dot(values, nullptr, n, item, items); });
  for (uint32_t half = items / 2; half > 0; half /= 2) {
    porta::inner([&](uint32_t item) {
      if (item < half) part[item] += part[item + half];
    });
  }
  porta::inner([&](uint32_t item) {
    if (item == 0) out[0] = part[0] / float(n);  // fp32 only: many GPUs have no fp64
  });
}
