// Launches that must not compile: the test suite compiles this file once per case and expects the
// compiler to refuse every case but RIGHT, with typed_kernel's own message.
#include <porta/porta.hpp>

// saxpy as PORTA_KERNEL(saxpy, uint32_t n, float a, const float* x, float* y) declares it.
using saxpy_kernel = porta::typed_kernel<uint32_t, float, const float*, float*>;

void launch(const saxpy_kernel& saxpy, const porta::stream& s, porta::device_buffer<float>& x,
            porta::device_buffer<float>& y, uint32_t n) {
#if defined(RIGHT)
  saxpy.launch(s, porta::div_up(n, 256), 256, n, 2.0f, x, y);
  const float* cx = x.data();
  saxpy.launch(s, 1, 256, n, 2.0f, cx, y.data());  // a const pointer where the kernel reads
#elif defined(WRONG_COUNT)
  saxpy.launch(s, porta::div_up(n, 256), 256, n, 2.0f, y);
#elif defined(SWAPPED_SCALARS)
  saxpy.launch(s, porta::div_up(n, 256), 256, 2.0f, n, x, y);  // same sizes, other types
#elif defined(WIDER_SCALAR)
  saxpy.launch(s, porta::div_up(n, 256), 256, n, 2.0, x, y);  // a double for the float
#elif defined(CONST_OUTPUT)
  const float* cy = y.data();
  saxpy.launch(s, porta::div_up(n, 256), 256, n, 2.0f, x, cy);  // read-only memory as output
#else
#error define one case
#endif
}
