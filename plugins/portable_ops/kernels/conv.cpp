// Kernels: conv (being written).
#include "common.h"
