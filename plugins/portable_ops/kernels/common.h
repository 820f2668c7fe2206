// Helpers shared by the portable kernels.
#pragma once

#include <porta/porta_kernel.h>

namespace porta_ops {

// The global index of work-item `item` in a 1-D launch whose grid may wrap into y (see
// launch_elementwise in portable_ops.h).
PORTA_DEVICE int64_t linear_index(uint32_t item) {
  const int64_t group = int64_t(porta::group_id(1)) * porta::group_count(0) + porta::group_id(0);
  return group * porta::group_size(0) + item;
}

}  // namespace porta_ops
