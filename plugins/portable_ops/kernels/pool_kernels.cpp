// Kernels: 2-D max pooling, NCHW, and its gradient as a gather (no atomics, deterministic).
//
// All walk rows: the forward pass and the argmax pass rows of y (planes x out_h of them, out_w
// long), the backward passes rows of dx (planes x in_h, in_w long). A group has group_size(0)
// items per row and group_size(1) rows; groups are numbered over a grid that may wrap into y.
//
// A window's maximum is its first in index order (row by row): ties go to the lowest index, a
// NaN wins (the first NaN: NaN propagates, as in PyTorch), and padding never takes part.
#include "common.h"

using porta_ops::kLanes;

namespace {

// The window geometry of one spatial dimension.
struct Axis {
  int64_t in, out, window, stride, pad;

  // The input positions [*first, *last) of output position o's window that lie inside the input.
  PORTA_DEVICE_FUNCTION void clip(int64_t o, int64_t* first, int64_t* last) const {
    const int64_t start = o * stride - pad;
    *first = start > 0 ? start : 0;
    *last = start + window < in ? start + window : in;
  }
  // The input positions [*first, *last) that output position o owns where windows do not
  // overlap (stride >= window): from its window's start to the next window's, the first
  // output's from 0 and the last output's to the end of the input. They hold o's window (pad <
  // window <= stride, so every start but the first is positive) and tile the input.
  PORTA_DEVICE_FUNCTION void band(int64_t o, int64_t* first, int64_t* last) const {
    const int64_t start = o * stride - pad;
    *first = o == 0 ? 0 : start < in ? start : in;
    *last = o + 1 == out ? in : start + stride < in ? start + stride : in;
  }
  // The output positions [*first, *last) whose windows hold input position i.
  PORTA_DEVICE_FUNCTION void covering(int64_t i, int64_t* first, int64_t* last) const {
    const int64_t lo = i + pad - window + 1;  // o * stride >= lo
    *first = lo > 0 ? (lo + stride - 1) / stride : 0;
    const int64_t hi = (i + pad) / stride + 1;  // o * stride <= i + pad
    *last = hi < out ? hi : out;
  }
};

// v beats the running maximum m: larger, or a NaN over a number. Bitwise operators rather than ||
// and &&, and porta_ops::pick, keep the scans free of branches: comparisons of data mispredict.
PORTA_DEVICE_FUNCTION bool beats(float v, float m) { return (v > m) | ((v != v) & (m == m)); }

// A running window maximum and its index h * in_w + w in the plane, an Index (int32_t where
// planes have fewer than 2^31 elements: the vector loops then use lanes of that width).
template <class Index>
struct Max {
  float value = -INFINITY;
  Index at = 0;
  // Adds the candidate at index i; candidates come in index order, so ties keep the first.
  PORTA_DEVICE_FUNCTION void add(float v, int64_t i) {
    const bool take = beats(v, value);
    value = porta_ops::pick(take, v, value);
    at = take ? Index(i) : at;
  }
  // Adds the candidate at index i, in any order: the lower index wins ties (and among NaNs).
  PORTA_DEVICE_FUNCTION void merge(float v, Index i) {
    const bool tie = (v == value) | ((v != v) & (value != value));
    const bool take = beats(v, value) | (tie & (i < at));
    value = porta_ops::pick(take, v, value);
    at = take ? i : at;
  }
};

// The maximum of output (p, q)'s window in plane x.
template <class Index>
PORTA_DEVICE_FUNCTION Max<Index> window_max(const float* plane, const Axis& ah, const Axis& aw, int64_t p,
                                   int64_t q) {
  int64_t h0, h1, w0, w1;
  ah.clip(p, &h0, &h1);
  aw.clip(q, &w0, &w1);
  Max<Index> m;
  for (int64_t h = h0; h < h1; ++h) {
    for (int64_t w = w0; w < w1; ++w) m.add(plane[h * aw.in + w], h * aw.in + w);
  }
  return m;
}

// The maxima of row p's windows on the CPU, a chunk of outputs at a time, in two steps whose
// loops vectorise: each column's maximum over the window rows (contiguous loads, the rows in
// order, so each column keeps its first maximum), then each window's over its columns, a column
// offset at a time across the outputs, the lower index winning ties; together that is the
// window's first maximum in index order. A window cut by the padding reads its first or last
// column again in place of the missing ones, which changes nothing. Then out(q, max) for every
// q. Windows wider than a chunk are left to window_max. Index is int32_t: the indices of a
// chunk's columns are formed in int32 lanes.
constexpr int32_t kChunk = 256;

template <class Out>
PORTA_DEVICE_FUNCTION void row_maxima_by_columns(const float* plane, const Axis& ah, const Axis& aw,
                                                 int64_t p, Out&& out) {
  int64_t h0, h1, unused;
  ah.clip(p, &h0, &h1);
  // The outputs of a chunk span (count - 1) * stride + window <= kChunk columns.
  const int64_t per_chunk = (kChunk - aw.window) / aw.stride + 1;
  const int32_t stride = int32_t(aw.stride);
  float value[kChunk], best[kChunk];
  int32_t at[kChunk], best_at[kChunk];
  for (int64_t q0 = 0; q0 < aw.out; q0 += per_chunk) {
    const int32_t count = int32_t(q0 + per_chunk < aw.out ? per_chunk : aw.out - q0);
    int64_t c0, c1;
    aw.clip(q0, &c0, &unused);
    aw.clip(q0 + count - 1, &unused, &c1);
    const int32_t n = int32_t(c1 - c0);
    const float* first_row = plane + h0 * aw.in + c0;
    const int32_t first_at = int32_t(h0 * aw.in + c0);
    for (int32_t k = 0; k < n; ++k) {
      value[k] = first_row[k];
      at[k] = first_at + k;
    }
    for (int64_t h = h0 + 1; h < h1; ++h) {
      const float* row = plane + h * aw.in + c0;
      const int32_t row_at = int32_t(h * aw.in + c0);
      for (int32_t k = 0; k < n; ++k) {
        const float v = row[k];
        const bool take = beats(v, value[k]);
        value[k] = porta_ops::pick(take, v, value[k]);
        at[k] = take ? row_at + k : at[k];
      }
    }
    // Output i's column j is at offset i * stride + first + j in the chunk, clamped to it.
    const int32_t first = int32_t(q0 * aw.stride - aw.pad - c0);
    for (int32_t i = 0; i < count; ++i) {
      int32_t k = i * stride + first;
      k = k < 0 ? 0 : k;
      best[i] = value[k];
      best_at[i] = at[k];
    }
    for (int32_t j = 1; j < int32_t(aw.window); ++j) {
      for (int32_t i = 0; i < count; ++i) {
        int32_t k = i * stride + first + j;
        k = k < 0 ? 0 : k > n - 1 ? n - 1 : k;
        const float v = value[k];
        const int32_t a = at[k];
        const bool tie = (v == best[i]) | ((v != v) & (best[i] != best[i]));
        const bool take = beats(v, best[i]) | (tie & (a < best_at[i]));
        best[i] = porta_ops::pick(take, v, best[i]);
        best_at[i] = take ? a : best_at[i];
      }
    }
    for (int32_t i = 0; i < count; ++i) out(q0 + i, Max<int32_t>{best[i], best_at[i]});
  }
}

// Calls out(q, max) for the outputs q of row p of a plane that item takes (q = item, item +
// items, ...): one item per row (the CPU) by columns, several one window each.
template <class Index, class Out>
PORTA_DEVICE_FUNCTION void row_maxima(const float* plane, const Axis& ah, const Axis& aw, int64_t p,
                             uint32_t item, uint32_t items, Out&& out) {
  if constexpr (kLanes > 1) {
    if (items == 1 && aw.window <= kChunk) {
      row_maxima_by_columns(plane, ah, aw, p, out);
      return;
    }
  }
  for (int64_t q = item; q < aw.out; q += items) out(q, window_max<Index>(plane, ah, aw, p, q));
}

// Runs over rows of y (planes x out_h of them, out_w long) and hands store(i, max) each window
// maximum, i being the output's index in y.
template <class Index, class Store>
PORTA_DEVICE_FUNCTION void window_maxima(int64_t planes, const Axis& ah, const Axis& aw, const float* x,
                                Store&& store) {
  const uint32_t items = porta::group_size(0);
  const int64_t first_row = porta_ops::group_index() * porta::group_size(1);
  porta::inner([&](uint32_t item, uint32_t r) {
    const int64_t row = first_row + r;  // (plane, p)
    if (row >= planes * ah.out) return;
    const int64_t plane = row / ah.out;
    row_maxima<Index>(x + plane * ah.in * aw.in, ah, aw, row - plane * ah.out, item, items,
                      [&](int64_t q, const Max<Index>& m) { store(row * aw.out + q, m); });
  });
}

// The largest group pool.cpp launches these kernels with (row_launch's max_items), declared so
// that GPU compilers budget their registers for no more: max_pool2d_backward needs 74 registers
// on sm_80, too many for a group of 1024.
constexpr uint32_t kPoolItems = 256;

}  // namespace

PORTA_KERNEL_MAX_GROUP(max_pool2d_forward, kPoolItems, int64_t planes, int64_t in_h, int64_t in_w,
                       int64_t out_h, int64_t out_w, int64_t window_h, int64_t window_w,
                       int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                       const float* x, float* y) {
  // Only the value is stored, which ties do not change: int32 indices do for any plane.
  window_maxima<int32_t>(planes, Axis{in_h, out_h, window_h, stride_h, pad_h},
                         Axis{in_w, out_w, window_w, stride_w, pad_w}, x,
                         [&](int64_t i, const Max<int32_t>& m) { y[i] = m.value; });
}

// argmax[plane][p][q] = the index h * in_w + w of output (p, q)'s window maximum in its plane
// (planes of fewer than 2^31 elements).
PORTA_KERNEL_MAX_GROUP(max_pool2d_argmax, kPoolItems, int64_t planes, int64_t in_h, int64_t in_w,
                       int64_t out_h, int64_t out_w, int64_t window_h, int64_t window_w,
                       int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                       const float* x, int32_t* argmax) {
  window_maxima<int32_t>(planes, Axis{in_h, out_h, window_h, stride_h, pad_h},
                         Axis{in_w, out_w, window_w, stride_w, pad_w}, x,
                         [&](int64_t i, const Max<int32_t>& m) { argmax[i] = m.at; });
}

// Where windows do not overlap (stride >= window, both ways), each dx element gets the dy of at
// most one window: one pass over rows of y, in which each output row zeroes the rows of dx it
// owns (Axis::band) and then stores each window's dy at its maximum (planes of fewer than 2^31
// elements). dx is written once, x and dy read once; no scratch. Several items per row zero
// their share of the band in a first pass, then store after the barrier.
PORTA_KERNEL_MAX_GROUP(max_pool2d_backward_disjoint, kPoolItems, int64_t planes, int64_t in_h,
                       int64_t in_w, int64_t out_h, int64_t out_w, int64_t window_h,
                       int64_t window_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                       int64_t pad_w, const float* x, const float* dy, float* dx) {
  const Axis ah{in_h, out_h, window_h, stride_h, pad_h};
  const Axis aw{in_w, out_w, window_w, stride_w, pad_w};
  const uint32_t items = porta::group_size(0);
  const int64_t first_row = porta_ops::group_index() * porta::group_size(1);
  const int64_t rows = planes * out_h;
  // The band of output row `row` (plane, p) as a range of the plane: its rows are contiguous.
  const auto band = [&](int64_t row, int64_t* begin, int64_t* end) {
    int64_t h0, h1;
    ah.band(row % out_h, &h0, &h1);
    *begin = (row / out_h) * in_h * in_w + h0 * in_w;
    *end = (row / out_h) * in_h * in_w + h1 * in_w;
  };
  porta::inner([&](uint32_t item, uint32_t r) {
    const int64_t row = first_row + r;
    if (items == 1 || row >= rows) return;
    int64_t begin, end;
    band(row, &begin, &end);
    for (int64_t i = begin + item; i < end; i += items) dx[i] = 0.0f;
  });
  porta::inner([&](uint32_t item, uint32_t r) {
    const int64_t row = first_row + r;
    if (row >= rows) return;
    if (items == 1) {
      int64_t begin, end;
      band(row, &begin, &end);
      for (int64_t i = begin; i < end; ++i) dx[i] = 0.0f;
    }
    const int64_t plane = row / out_h;
    const float* dyr = dy + row * out_w;
    float* dxp = dx + plane * in_h * in_w;
    row_maxima<int32_t>(x + plane * in_h * in_w, ah, aw, row - plane * out_h, item, items,
                        [&](int64_t q, const Max<int32_t>& m) { dxp[m.at] = dyr[q]; });
  });
}

namespace {

// Runs body(item, items, plane, h, dx_row) over the rows of dx (planes x in_h of them).
template <class Body>
PORTA_DEVICE_FUNCTION void dx_rows(int64_t planes, const Axis& ah, const Axis& aw, float* dx, Body&& body) {
  const uint32_t items = porta::group_size(0);
  const int64_t first_row = porta_ops::group_index() * porta::group_size(1);
  porta::inner([&](uint32_t item, uint32_t r) {
    const int64_t row = first_row + r;  // (plane, h)
    if (row >= planes * ah.in) return;
    const int64_t plane = row / ah.in;
    body(item, items, plane, row - plane * ah.in, dx + row * aw.in);
  });
}

// dxr[w] for w = item, item + items, ... of row h: the sum of dyp[p][q] over the outputs (p, q)
// whose windows cover (h, w) and chose it (chosen(p, q) == h * in_w + w), in increasing (p, q)
// order.
template <class Chosen>
PORTA_DEVICE_FUNCTION void gather_row(const Axis& ah, const Axis& aw, int64_t h, uint32_t item,
                             uint32_t items, const float* dyp, float* dxr, Chosen&& chosen) {
  int64_t p0, p1;
  ah.covering(h, &p0, &p1);
  for (int64_t w = item; w < aw.in; w += items) {
    int64_t q0, q1;
    aw.covering(w, &q0, &q1);
    const int64_t self = h * aw.in + w;
    float sum = 0.0f;
    for (int64_t p = p0; p < p1; ++p) {
      for (int64_t q = q0; q < q1; ++q) {
        if (chosen(p, q) == self) sum += dyp[p * aw.out + q];
      }
    }
    dxr[w] = sum;
  }
}

}  // namespace

// dx[h][w] = sum of dy[p][q] over the outputs (p, q) whose window maximum, from
// max_pool2d_argmax, is (h, w), added in increasing (p, q) order. Rows over dx. With one item
// per row (the CPU) the item runs through the outputs whose windows cover its row and adds each
// dy to the element its window chose, in the same order, with no division; with several, each
// item finds the outputs that cover each of its elements.
PORTA_KERNEL_MAX_GROUP(max_pool2d_backward_gather, kPoolItems, int64_t planes, int64_t in_h,
                       int64_t in_w, int64_t out_h, int64_t out_w, int64_t window_h,
                       int64_t window_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                       int64_t pad_w, const int32_t* argmax, const float* dy, float* dx) {
  const Axis ah{in_h, out_h, window_h, stride_h, pad_h};
  const Axis aw{in_w, out_w, window_w, stride_w, pad_w};
  dx_rows(planes, ah, aw, dx,
          [&](uint32_t item, uint32_t items, int64_t plane, int64_t h, float* dxr) {
            const int32_t* ap = argmax + plane * out_h * out_w;
            const float* dyp = dy + plane * out_h * out_w;
            if (items == 1) {
              int64_t p0, p1;
              ah.covering(h, &p0, &p1);
              for (int64_t w = 0; w < in_w; ++w) dxr[w] = 0.0f;
              for (int64_t p = p0; p < p1; ++p) {
                for (int64_t q = 0; q < out_w; ++q) {
                  const int64_t w = int64_t(ap[p * out_w + q]) - h * in_w;
                  if (w >= 0 && w < in_w) dxr[w] += dyp[p * out_w + q];
                }
              }
              return;
            }
            gather_row(ah, aw, h, item, items, dyp, dxr,
                       [&](int64_t p, int64_t q) { return int64_t(ap[p * out_w + q]); });
          });
}

// As max_pool2d_backward_gather, finding each window's maximum again instead of reading it: no
// scratch, for planes too large for int32 indices.
PORTA_KERNEL_MAX_GROUP(max_pool2d_backward, kPoolItems, int64_t planes, int64_t in_h, int64_t in_w,
                       int64_t out_h, int64_t out_w, int64_t window_h, int64_t window_w,
                       int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                       const float* x, const float* dy, float* dx) {
  const Axis ah{in_h, out_h, window_h, stride_h, pad_h};
  const Axis aw{in_w, out_w, window_w, stride_w, pad_w};
  dx_rows(planes, ah, aw, dx,
          [&](uint32_t item, uint32_t items, int64_t plane, int64_t h, float* dxr) {
            const float* xp = x + plane * in_h * in_w;
            gather_row(ah, aw, h, item, items, dy + plane * out_h * out_w, dxr,
                       [&](int64_t p, int64_t q) {
                         return window_max<int64_t>(xp, ah, aw, p, q).at;
                       });
          });
}
