"""CUDA C source of the GPU kernels (plain text: importing this never touches CUDA)."""

#: Threads per block of every kernel; the shared-memory reductions assume exactly this
#: many (a power of two).
BLOCK = 256

#: Kernel names defined in :data:`CUDA_SOURCE`.
KERNEL_NAMES = (
    "map_minmax",
    "normalise_mask",
    "adjoint_reduce",
    "adjoint_scatter",
    "scorecam_minmax",
    "scorecam_mask",
)

# Conventions: all arrays C-contiguous float32 unless stated; sizes are long long so that
# N*K*C*H*W > 2^31 elements index correctly; grid-stride loops let any grid size work.
# Bilinear taps (ty, wy for rows; tx, wx for columns) are the <= 2 non-zeros per row of
# bilinear_matrix(): int32 idx[2][n] and float wt[2][n] (wt[1] = 0 where a row has one).
CUDA_SOURCE = r"""
#define OC_BLOCK 256

extern "C" {

// Block-wide min/max of (lo, hi); the result is left in s_lo[0], s_hi[0].
__device__ void oc_block_minmax(float lo, float hi, float* s_lo, float* s_hi)
{
    s_lo[threadIdx.x] = lo;
    s_hi[threadIdx.x] = hi;
    __syncthreads();
    for (unsigned int s = OC_BLOCK / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            s_lo[threadIdx.x] = fminf(s_lo[threadIdx.x], s_lo[threadIdx.x + s]);
            s_hi[threadIdx.x] = fmaxf(s_hi[threadIdx.x], s_hi[threadIdx.x + s]);
        }
        __syncthreads();
    }
}

// One bilinear output value of map a (h_in unused: taps are in range by construction).
__device__ __forceinline__ float oc_bilerp(const float* __restrict__ a, long long w_in,
                                           int y0, int y1, float wy0, float wy1,
                                           int x0, int x1, float wx0, float wx1)
{
    // Same order as U_h @ (A @ U_w^T): width taps first, then height taps.
    const float* r0 = a + (long long)y0 * w_in;
    const float* r1 = a + (long long)y1 * w_in;
    float t0 = wx0 * r0[x0] + wx1 * r0[x1];
    float t1 = wx0 * r1[x0] + wx1 * r1[x1];
    return wy0 * t0 + wy1 * t1;
}

// Per-map min and max: maps (M, P); one block per map.
__global__ void map_minmax(const float* __restrict__ maps, long long P,
                           float* __restrict__ out_min, float* __restrict__ out_max)
{
    __shared__ float s_lo[OC_BLOCK];
    __shared__ float s_hi[OC_BLOCK];
    const float* m = maps + (long long)blockIdx.x * P;
    float lo = m[0], hi = m[0];
    for (long long p = threadIdx.x; p < P; p += OC_BLOCK) {
        float v = m[p];
        lo = fminf(lo, v);
        hi = fmaxf(hi, v);
    }
    oc_block_minmax(lo, hi, s_lo, s_hi);
    if (threadIdx.x == 0) {
        out_min[blockIdx.x] = s_lo[0];
        out_max[blockIdx.x] = s_hi[0];
    }
}

// sal (N, HW) = (s_up - min) / (max - min + eps); masked (N, C, HW) = img * sal.
__global__ void normalise_mask(const float* __restrict__ s_up, const float* __restrict__ mn,
                               const float* __restrict__ mx, const float* __restrict__ img,
                               long long N, long long C, long long HW, float eps,
                               float* __restrict__ sal, float* __restrict__ masked)
{
    long long total = N * C * HW;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        long long p = i % HW;
        long long r = i / HW;
        long long c = r % C;
        long long n = r / C;
        float lo = mn[n];
        float sn = (s_up[n * HW + p] - lo) / (mx[n] - lo + eps);
        masked[i] = img[i] * sn;
        if (c == 0) sal[n * HW + p] = sn;
    }
}

// Adjoint, pass 1 (one block per image n): gsn = sum_c g * img (N, HW) and
// stats (N, 4) float64 = [sum gsn, sum gsn * sal, #pixels at min, #pixels at max].
__global__ void adjoint_reduce(const float* __restrict__ g, const float* __restrict__ img,
                               const float* __restrict__ s_up, const float* __restrict__ sal,
                               const float* __restrict__ mn, const float* __restrict__ mx,
                               long long C, long long HW,
                               float* __restrict__ gsn, double* __restrict__ stats)
{
    __shared__ double s_acc[4][OC_BLOCK];
    long long n = blockIdx.x;
    float lo = mn[n], hi = mx[n];
    double acc0 = 0.0, acc1 = 0.0, acc2 = 0.0, acc3 = 0.0;
    for (long long p = threadIdx.x; p < HW; p += OC_BLOCK) {
        float G = 0.0f;
        for (long long c = 0; c < C; ++c) {
            long long q = (n * C + c) * HW + p;
            G += g[q] * img[q];
        }
        long long o = n * HW + p;
        gsn[o] = G;
        float s = s_up[o];
        acc0 += (double)G;
        acc1 += (double)G * (double)sal[o];
        acc2 += (s == lo) ? 1.0 : 0.0;
        acc3 += (s == hi) ? 1.0 : 0.0;
    }
    s_acc[0][threadIdx.x] = acc0;
    s_acc[1][threadIdx.x] = acc1;
    s_acc[2][threadIdx.x] = acc2;
    s_acc[3][threadIdx.x] = acc3;
    __syncthreads();
    for (unsigned int s = OC_BLOCK / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            for (int j = 0; j < 4; ++j) s_acc[j][threadIdx.x] += s_acc[j][threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x < 4) stats[n * 4 + threadIdx.x] = s_acc[threadIdx.x][0];
}

// Adjoint, pass 2: d objective / d s_up (N, HW) = gsn / D plus the argmin / argmax terms
// dm = (sum G Sn - sum G) / D, dM = -sum G Sn / D, each split evenly over its ties.
__global__ void adjoint_scatter(const float* __restrict__ gsn, const float* __restrict__ s_up,
                                const float* __restrict__ mn, const float* __restrict__ mx,
                                const double* __restrict__ stats, long long N, long long HW,
                                float eps, float* __restrict__ gs)
{
    long long total = N * HW;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        long long n = i / HW;
        float lo = mn[n], hi = mx[n];
        float d = hi - lo + eps;
        const double* st = stats + n * 4;
        float r = gsn[i] / d;
        float s = s_up[i];
        if (s == lo) r += (float)((st[1] - st[0]) / (double)d / st[2]);
        if (s == hi) r += (float)(-st[1] / (double)d / st[3]);
        gs[i] = r;
    }
}

// Score-CAM pass 1: min/max of every upsampled map without storing it; one block per
// map m = n * Kc + j, channel k = k0 + j * kstep of a (N, K, h, w).
__global__ void scorecam_minmax(const float* __restrict__ a, long long K, long long h, long long w,
                                long long Kc, long long k0, long long kstep, long long H, long long W,
                                const int* __restrict__ ty, const float* __restrict__ wy,
                                const int* __restrict__ tx, const float* __restrict__ wx,
                                float* __restrict__ out_min, float* __restrict__ out_max)
{
    __shared__ float s_lo[OC_BLOCK];
    __shared__ float s_hi[OC_BLOCK];
    long long m = blockIdx.x;
    long long n = m / Kc;
    long long k = k0 + (m % Kc) * kstep;
    const float* am = a + (n * K + k) * h * w;
    float first = oc_bilerp(am, w, ty[0], ty[H], wy[0], wy[H], tx[0], tx[W], wx[0], wx[W]);
    float lo = first, hi = first;
    for (long long p = threadIdx.x; p < H * W; p += OC_BLOCK) {
        long long y = p / W, x = p % W;
        float v = oc_bilerp(am, w, ty[y], ty[H + y], wy[y], wy[H + y],
                            tx[x], tx[W + x], wx[x], wx[W + x]);
        lo = fminf(lo, v);
        hi = fmaxf(hi, v);
    }
    oc_block_minmax(lo, hi, s_lo, s_hi);
    if (threadIdx.x == 0) {
        out_min[m] = s_lo[0];
        out_max[m] = s_hi[0];
    }
}

// Score-CAM pass 2: out (N * Kc, C, H, W) = img[n] * (up(a[n, k]) - min) / (max - min + eps),
// recomputing each upsampled value instead of reading a stored map.
__global__ void scorecam_mask(const float* __restrict__ a, const float* __restrict__ img,
                              long long N, long long K, long long h, long long w,
                              long long Kc, long long k0, long long kstep,
                              long long C, long long H, long long W,
                              const int* __restrict__ ty, const float* __restrict__ wy,
                              const int* __restrict__ tx, const float* __restrict__ wx,
                              const float* __restrict__ mn, const float* __restrict__ mx,
                              float eps, float* __restrict__ out)
{
    long long HW = H * W;
    long long total = N * Kc * C * HW;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        long long p = i % HW;
        long long r = i / HW;
        long long c = r % C;
        long long m = r / C;
        long long n = m / Kc;
        long long k = k0 + (m % Kc) * kstep;
        long long y = p / W, x = p % W;
        float v = oc_bilerp(a + (n * K + k) * h * w, w, ty[y], ty[H + y], wy[y], wy[H + y],
                            tx[x], tx[W + x], wx[x], wx[W + x]);
        float lo = mn[m];
        out[i] = img[(n * C + c) * HW + p] * ((v - lo) / (mx[m] - lo + eps));
    }
}

}  // extern "C"
"""
