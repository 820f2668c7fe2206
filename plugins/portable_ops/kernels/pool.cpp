// Kernels: pool (being written).
#include "common.h"
