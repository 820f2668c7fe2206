// Kernels: gemm (being written).
#include "common.h"
