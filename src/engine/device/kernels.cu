// The device tier's kernels (src/engine/device.rs compiles them with NVRTC at run time):
// gather and scatter of whole rows or their values, and the optimizer updates, which
// mirror `Optimizer::apply_row` (src/engine/mod.rs) statement by statement. They are
// compiled without fused multiply-adds, fast math or flush-to-zero
// (`device::compile_kernels`), so a row updated here has the same bits as on the CPU.

extern "C" __global__ void gather_rows(const float* __restrict__ slab, const unsigned int* __restrict__ slots,
                                       unsigned int n, unsigned int width, unsigned int floats,
                                       float* __restrict__ out) {
    size_t total = (size_t)n * width;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / width, c = i % width;
        out[i] = slab[(size_t)slots[r] * floats + c];
    }
}

extern "C" __global__ void scatter_rows(float* __restrict__ slab, const unsigned int* __restrict__ slots,
                                        unsigned int n, unsigned int floats, const float* __restrict__ rows) {
    size_t total = (size_t)n * floats;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / floats, c = i % floats;
        slab[(size_t)slots[r] * floats + c] = rows[i];
    }
}

extern "C" __global__ void apply_sgd(float* __restrict__ slab, const unsigned int* __restrict__ slots,
                                     unsigned int n, unsigned int dim, unsigned int floats,
                                     const float* __restrict__ grads, float lr) {
    size_t r = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (r >= n) return;
    float* row = slab + (size_t)slots[r] * floats;
    const float* g = grads + r * dim;
    for (unsigned int j = 0; j < dim; ++j) {
        row[j] -= lr * g[j];
    }
}

extern "C" __global__ void apply_rowwise_adagrad(float* __restrict__ slab, const unsigned int* __restrict__ slots,
                                                 unsigned int n, unsigned int dim, unsigned int floats,
                                                 const float* __restrict__ grads, float lr, float eps) {
    size_t r = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (r >= n) return;
    float* row = slab + (size_t)slots[r] * floats;
    const float* g = grads + r * dim;
    float sum_sq = 0.0f;
    for (unsigned int j = 0; j < dim; ++j) {
        sum_sq += g[j] * g[j];
    }
    float acc = row[dim] + sum_sq / (float)dim;
    row[dim] = acc;
    float step = lr / (sqrtf(acc) + eps);
    for (unsigned int j = 0; j < dim; ++j) {
        row[j] -= step * g[j];
    }
}
