/* The sample's kernel, y = a*x + y, as a CPU code object (porta_kernel.h): one exported
 * descriptor per kernel, whose run_group runs every work-item of one work-group. */
#include <porta/porta_kernel.h>

static void saxpy_group(const porta_cpu_work_group_t* group, void* const* args) {
  const uint32_t n = *(const uint32_t*)args[0];
  const float a = *(const float*)args[1];
  const float* x = *(const float* const*)args[2];
  float* y = *(float* const*)args[3];
  const uint32_t first = group->group_id[0] * group->group_size[0];
  for (uint32_t item = 0; item < group->group_size[0]; ++item) {
    const uint32_t i = first + item;
    if (i < n) y[i] = a * x[i] + y[i];
  }
}

static const uint32_t saxpy_params[] = {sizeof(uint32_t), sizeof(float), sizeof(float*),
                                        sizeof(float*)};

__attribute__((visibility("default"))) const porta_cpu_kernel_t porta_cpu_kernel_saxpy = {
    sizeof(porta_cpu_kernel_t), PORTA_CPU_KERNEL_ABI_VERSION, 4, saxpy_params, saxpy_group};
