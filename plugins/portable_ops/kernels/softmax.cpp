// Kernels: softmax (being written).
#include "common.h"
