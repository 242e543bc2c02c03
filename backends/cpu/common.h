// Shared by the compiled CPU kernels (backends/cpu/*.cpp; see backends/cpu_library.py).
//
// Every kernel is a template over the element type, exported once per dtype by
// DLX_EXPORT_FLOAT_TYPES as plain C functions dlx_<name>_f32 / dlx_<name>_f64.
// Arrays arrive as pointers to C-contiguous data; sizes as int64_t.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace dlx_cpu {
using index_t = std::int64_t;
}  // namespace dlx_cpu
