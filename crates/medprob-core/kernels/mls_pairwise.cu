// Pairwise MLS on the GPU: the CUDA kernels of medprob-core's fused operation
// (src/fused.rs, launched from src/cuda/mls.rs). Compiled to PTX by build.rs when the
// `cuda` feature is on.
//
//   MLS_ij = 1/2 sum_d [ (mu_id - mu'_jd)^2 / t + log(t + eps) ],  t = s_id + s'_jd,
//   s = max(exp(v), eps)
//
// Rows are `mean || log_var` ([N, 2D], contiguous). Nothing of size N x M x D is formed:
// the forward pass is tiled like a matrix product (a block computes a tile of outputs,
// staging D-slices of both sides' rows in shared memory), and the backward pass tiles
// (rows of one side) x (dimensions), reducing over the other side's rows in shared-memory
// chunks. Every output element is written by exactly one thread (no atomics), so results
// are deterministic.
//
// Precision: f32, f16 and bf16 inputs are computed and accumulated in f32, f64 inputs in
// f64; results are stored in the input type. logf/log and divisions are the accurate ones
// (no fast-math).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// The accumulator type of each storage type.
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

__device__ __forceinline__ float widen(float x) { return x; }
__device__ __forceinline__ double widen(double x) { return x; }
__device__ __forceinline__ float widen(__half x) { return __half2float(x); }
__device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ void put(float* p, float v) { *p = v; }
__device__ __forceinline__ void put(double* p, double v) { *p = v; }
__device__ __forceinline__ void put(__half* p, float v) { *p = __float2half(v); }
__device__ __forceinline__ void put(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }

__device__ __forceinline__ float log_(float x) { return logf(x); }
__device__ __forceinline__ double log_(double x) { return log(x); }
__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }

// The clamped variance s = max(e^v, eps).
template <typename A> __device__ __forceinline__ A variance(A v, A eps) {
    A e = exp_(v);
    return e > eps ? e : eps;
}

// Forward: out[x_row * out_sx + y_row * out_sy] = MLS(x_row, y_row) for nx rows of `x` and
// ny rows of `y` (both [*, 2D]). A block of BX x BY threads computes a tile of
// (BY * RX) x-rows by (BX * RY) y-rows, RX x RY outputs per thread, staging TK dimensions
// at a time. Row tiles of x are taken grid-stride along gridDim.y (which is capped at
// 65535); tiles of y along gridDim.x. The output strides let the caller put the smaller
// side on x (the narrow configuration) and still write [N, M] row-major.
template <typename T, int BX, int BY, int RX, int RY, int TK>
__device__ __forceinline__ void mls_fwd(const T* __restrict__ x, const T* __restrict__ y,
                                        T* __restrict__ out, int64_t nx, int64_t ny, int64_t d,
                                        int64_t out_sx, int64_t out_sy, double eps_) {
    using A = typename Acc<T>::type;
    constexpr int TX = BY * RX, TY = BX * RY, THREADS = BX * BY;
    __shared__ A xm[TK][TX], xs[TK][TX], ym[TK][TY], ys[TK][TY];
    if (blockDim.x != BX || blockDim.y != BY) __trap();  // launched with the wrong shape

    const A eps = static_cast<A>(eps_);
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * BX + tx;
    const int64_t y0 = static_cast<int64_t>(blockIdx.x) * TY;
    const int64_t tiles_x = (nx + TX - 1) / TX;

    for (int64_t tile = blockIdx.y; tile < tiles_x; tile += gridDim.y) {
        const int64_t x0 = tile * TX;
        A acc[RX][RY];
#pragma unroll
        for (int r = 0; r < RX; ++r)
#pragma unroll
            for (int c = 0; c < RY; ++c) acc[r][c] = A(0);

        for (int64_t k0 = 0; k0 < d; k0 += TK) {
            const int kmax = static_cast<int>(d - k0 < TK ? d - k0 : TK);
            // Rows past the end get mean 0 and variance 1 (finite, never written out);
            // dimensions past the end are never read (the loop below stops at kmax).
            for (int e = tid; e < TX * TK; e += THREADS) {
                const int r = e / TK, k = e % TK;
                const int64_t row = x0 + r;
                A m = A(0), s = A(1);
                if (row < nx && k < kmax) {
                    const T* p = x + row * 2 * d + k0 + k;
                    m = widen(p[0]);
                    s = variance(static_cast<A>(widen(p[d])), eps);
                }
                xm[k][r] = m;
                xs[k][r] = s;
            }
            for (int e = tid; e < TY * TK; e += THREADS) {
                const int c = e / TK, k = e % TK;
                const int64_t row = y0 + c;
                A m = A(0), s = A(1);
                if (row < ny && k < kmax) {
                    const T* p = y + row * 2 * d + k0 + k;
                    m = widen(p[0]);
                    s = variance(static_cast<A>(widen(p[d])), eps);
                }
                ym[k][c] = m;
                ys[k][c] = s;
            }
            __syncthreads();
            for (int k = 0; k < kmax; ++k) {
                A am[RX], as[RX], bm[RY], bs[RY];
#pragma unroll
                for (int r = 0; r < RX; ++r) {
                    am[r] = xm[k][ty + BY * r];
                    as[r] = xs[k][ty + BY * r];
                }
#pragma unroll
                for (int c = 0; c < RY; ++c) {
                    bm[c] = ym[k][tx + BX * c];
                    bs[c] = ys[k][tx + BX * c];
                }
#pragma unroll
                for (int r = 0; r < RX; ++r)
#pragma unroll
                    for (int c = 0; c < RY; ++c) {
                        const A t = as[r] + bs[c];
                        const A dm = am[r] - bm[c];
                        acc[r][c] += dm * dm / t + log_(t + eps);
                    }
            }
            __syncthreads();
        }

#pragma unroll
        for (int r = 0; r < RX; ++r) {
            const int64_t i = x0 + ty + BY * r;
            if (i >= nx) continue;
#pragma unroll
            for (int c = 0; c < RY; ++c) {
                const int64_t j = y0 + tx + BX * c;
                if (j < ny) put(out + i * out_sx + j * out_sy, A(0.5) * acc[r][c]);
            }
        }
    }
}

// Backward: out is [N + M, 2D], the gradients of sum_ij G_ij MLS(a_i, b_j) with respect to
// a's rows (rows 0..N) then b's (rows N..N+M); G is [N, M] row-major. blockIdx.z picks the
// side. A block of BX x BY threads owns (BY * RI) rows of that side by BX dimensions and
// reduces over the other side's rows TJ at a time:
//   dmu_id = sum_j G_ij q,  dv_id = e^v_id [e^v_id >= eps] * 1/2 sum_j G_ij (1/(t+eps) - q^2),
//   q = (mu_id - mu'_jd) / t.
// MLS is symmetric, so the same formula serves the second side with G transposed.
template <typename T, int BX, int BY, int RI, int TJ>
__device__ __forceinline__ void mls_bwd(const T* __restrict__ a, const T* __restrict__ b,
                                        const T* __restrict__ g, T* __restrict__ out, int64_t n,
                                        int64_t m, int64_t d, double eps_) {
    using A = typename Acc<T>::type;
    constexpr int TI = BY * RI, THREADS = BX * BY;
    __shared__ A om[TJ][BX], os[TJ][BX], gs[TI][TJ + 1];
    if (blockDim.x != BX || blockDim.y != BY) __trap();  // launched with the wrong shape

    const A eps = static_cast<A>(eps_);
    const bool second = blockIdx.z == 1;
    const T* self = second ? b : a;
    const T* other = second ? a : b;
    const int64_t n_self = second ? m : n, n_other = second ? n : m;
    const int64_t out_row0 = second ? n : 0;
    // G(self row i, other row j): G[i, j] for a's side, G[j, i] for b's.
    const int64_t g_si = second ? 1 : m, g_sj = second ? m : 1;

    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * BX + tx;
    const int64_t k = static_cast<int64_t>(blockIdx.x) * BX + tx;  // this thread's dimension
    const bool k_ok = k < d;
    const int64_t tiles = (n_self + TI - 1) / TI;

    for (int64_t tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
        const int64_t i0 = tile * TI;
        A mu[RI], s[RI], dv[RI], gm[RI], gv[RI];
#pragma unroll
        for (int r = 0; r < RI; ++r) {
            const int64_t i = i0 + ty + BY * r;
            mu[r] = A(0);
            s[r] = A(1);
            dv[r] = A(0);
            if (i < n_self && k_ok) {
                const T* p = self + i * 2 * d + k;
                mu[r] = widen(p[0]);
                const A e = exp_(static_cast<A>(widen(p[d])));
                s[r] = e > eps ? e : eps;
                dv[r] = e >= eps ? e : A(0);
            }
            gm[r] = A(0);
            gv[r] = A(0);
        }

        for (int64_t j0 = 0; j0 < n_other; j0 += TJ) {
            const int jmax = static_cast<int>(n_other - j0 < TJ ? n_other - j0 : TJ);
            for (int e = tid; e < TJ * BX; e += THREADS) {
                const int jj = e / BX, kk = e % BX;
                const int64_t j = j0 + jj, kd = static_cast<int64_t>(blockIdx.x) * BX + kk;
                A mv = A(0), sv = A(1);
                if (jj < jmax && kd < d) {
                    const T* p = other + j * 2 * d + kd;
                    mv = widen(p[0]);
                    sv = variance(static_cast<A>(widen(p[d])), eps);
                }
                om[jj][kk] = mv;
                os[jj][kk] = sv;
            }
            for (int e = tid; e < TI * TJ; e += THREADS) {
                // Read G along its contiguous axis: j for a's side, i for b's.
                const int ii = second ? e % TI : e / TJ;
                const int jj = second ? e / TI : e % TJ;
                const int64_t i = i0 + ii;
                A w = A(0);
                if (i < n_self && jj < jmax) w = widen(g[i * g_si + (j0 + jj) * g_sj]);
                gs[ii][jj] = w;
            }
            __syncthreads();
            for (int jj = 0; jj < jmax; ++jj) {
                const A mo = om[jj][tx], so = os[jj][tx];
#pragma unroll
                for (int r = 0; r < RI; ++r) {
                    const A w = gs[ty + BY * r][jj];
                    const A t = s[r] + so;
                    const A q = (mu[r] - mo) / t;
                    gm[r] += w * q;
                    gv[r] += w * (A(1) / (t + eps) - q * q);
                }
            }
            __syncthreads();
        }

        if (k_ok) {
#pragma unroll
            for (int r = 0; r < RI; ++r) {
                const int64_t i = i0 + ty + BY * r;
                if (i >= n_self) continue;
                T* p = out + (out_row0 + i) * 2 * d + k;
                put(p, gm[r]);
                put(p + d, A(0.5) * gv[r] * dv[r]);
            }
        }
    }
}

// Launch shapes; src/cuda/mls.rs mirrors these constants.
// wide:   16 x 16 threads, 64 x 64 outputs per block (both sides have >= 17 rows)
// narrow: 64 x 4 threads, 4 x 256 outputs per block (the smaller side on x, <= 16 rows)
// bwd:    32 x 8 threads, 32 rows x 32 dimensions per block and side
#define MLS_ENTRY_POINTS(T, SUFFIX)                                                          \
    extern "C" __global__ void __launch_bounds__(256) mls_fwd_wide_##SUFFIX(                 \
        const T* x, const T* y, T* out, int64_t nx, int64_t ny, int64_t d, int64_t out_sx,   \
        int64_t out_sy, double eps) {                                                        \
        mls_fwd<T, 16, 16, 4, 4, 16>(x, y, out, nx, ny, d, out_sx, out_sy, eps);             \
    }                                                                                        \
    extern "C" __global__ void __launch_bounds__(256) mls_fwd_narrow_##SUFFIX(               \
        const T* x, const T* y, T* out, int64_t nx, int64_t ny, int64_t d, int64_t out_sx,   \
        int64_t out_sy, double eps) {                                                        \
        mls_fwd<T, 64, 4, 1, 4, 8>(x, y, out, nx, ny, d, out_sx, out_sy, eps);               \
    }                                                                                        \
    extern "C" __global__ void __launch_bounds__(256) mls_bwd_##SUFFIX(                      \
        const T* a, const T* b, const T* g, T* out, int64_t n, int64_t m, int64_t d,         \
        double eps) {                                                                        \
        mls_bwd<T, 32, 8, 4, 16>(a, b, g, out, n, m, d, eps);                                \
    }

MLS_ENTRY_POINTS(float, f32)
MLS_ENTRY_POINTS(double, f64)
MLS_ENTRY_POINTS(__half, f16)
MLS_ENTRY_POINTS(__nv_bfloat16, bf16)
