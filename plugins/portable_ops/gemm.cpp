// Host side: gemm (being written).
#include "portable_ops.h"

namespace porta::portable_ops {

porta_status_t gemm(void*, porta_stream_t, const porta_gemm_desc_t*, const void* a, const void* b, float* c) {
  return fail(PORTA_ERROR_UNSUPPORTED, "gemm: not implemented yet");
}

}  // namespace porta::portable_ops
