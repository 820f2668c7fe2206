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
  PORTA_DEVICE_FUNCTION void add(float v, int64_t i) {
    const bool take = beats(v, value);
    value = porta_ops::pick(take, v, value);
    at = take ? Index(i) : at;
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

// The maxima of kLanes consecutive outputs from q of row p, whose windows lie inside the input
// across: the lanes scan their windows side by side, a loop that vectorises (and independent
// chains of comparisons).
template <class Index>
PORTA_DEVICE_FUNCTION void lane_maxima(const float* plane, const Axis& aw, int64_t h0, int64_t h1, int64_t q,
                              Max<Index> (&m)[kLanes]) {
  const int64_t w_first = q * aw.stride - aw.pad;
  for (int64_t h = h0; h < h1; ++h) {
    for (int64_t j = 0; j < aw.window; ++j) {
      const int64_t w0 = h * aw.in + w_first + j;
      for (uint32_t lane = 0; lane < kLanes; ++lane) {
        m[lane].add(plane[w0 + lane * aw.stride], w0 + lane * aw.stride);
      }
    }
  }
}

// Calls out(q, max) for the outputs q of row p of a plane that item takes (q = item, item +
// items, ...). One item per row (the CPU) takes the outputs whose windows lie inside the input
// across kLanes at a time (lane_maxima), the others one by one.
template <class Index, class Out>
PORTA_DEVICE_FUNCTION void row_maxima(const float* plane, const Axis& ah, const Axis& aw, int64_t p,
                             uint32_t item, uint32_t items, Out&& out) {
  int64_t q = item;
  if (kLanes > 1 && items == 1) {
    int64_t h0, h1;
    ah.clip(p, &h0, &h1);
    // The outputs [first, last) inside across: q * stride >= pad, q * stride - pad + window <= in.
    const int64_t first = (aw.pad + aw.stride - 1) / aw.stride;
    int64_t last =
        aw.in + aw.pad - aw.window >= 0 ? (aw.in + aw.pad - aw.window) / aw.stride + 1 : 0;
    last = last < aw.out ? last : aw.out;
    if (last - first >= int64_t(kLanes)) {
      for (; q < first; ++q) out(q, window_max<Index>(plane, ah, aw, p, q));
      // The last block starts early enough to end at `last`; outputs it repeats come out equal.
      for (; q < last; q += kLanes) {
        const int64_t start = q + int64_t(kLanes) <= last ? q : last - int64_t(kLanes);
        Max<Index> m[kLanes];
        lane_maxima(plane, aw, h0, h1, start, m);
        for (uint32_t lane = 0; lane < kLanes; ++lane) out(start + lane, m[lane]);
      }
      q = last;
    }
  }
  for (; q < aw.out; q += items) out(q, window_max<Index>(plane, ah, aw, p, q));
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
  window_maxima<int64_t>(planes, Axis{in_h, out_h, window_h, stride_h, pad_h},
                         Axis{in_w, out_w, window_w, stride_w, pad_w}, x,
                         [&](int64_t i, const Max<int64_t>& m) { y[i] = m.value; });
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
