// Kernels of the Qwen2.5-VL and Qwen3-VL vision towers (encoder/src/cuda). Element type T
// is float or bf16 (held as raw 16-bit words, so no CUDA headers are needed); math is in
// float and rounds to T where the reference (transformers, bf16 weights) rounds.

typedef unsigned short bf16_t;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16_t x) { return __uint_as_float(((unsigned int)x) << 16); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16_t from_f<bf16_t>(float v) {
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40u);  // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return (bf16_t)(u >> 16);
}
// Round a float to T's precision, staying in float.
template <typename T> __device__ __forceinline__ float round_to(float v) { return to_f(from_f<T>(v)); }

// dst[j, :] = src[order[j], :], converting the element type (pixel values → model dtype;
// the merger's output back to input order).
template <typename S, typename D>
__device__ void gather_rows(const S* __restrict__ src, D* __restrict__ dst, const unsigned int* __restrict__ order,
                            long long rows, int cols) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long n = rows * cols;
    for (; i < n; i += (long long)gridDim.x * blockDim.x) {
        long long r = i / cols;
        int c = (int)(i - r * cols);
        dst[i] = from_f<D>(to_f(src[(long long)order[r] * cols + c]));
    }
}

// Block-wide sum for up to 1024 threads.
__device__ float block_sum(float v) {
    __shared__ float warp_sums[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + 31) / 32;
    v = lane < warps ? warp_sums[lane] : 0.0f;
    if (warp == 0) {
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) warp_sums[0] = v;
    }
    __syncthreads();
    float total = warp_sums[0];
    __syncthreads();
    return total;
}

// One row per block of 256 threads, the row held in registers (cols <= 8 * 256):
// x += delta (when delta is given, rounded to X: the residual stream's type), then
// out = T(T(x * rsqrt(mean(x^2) + eps)) * w). bf16 towers keep the residual stream x in
// float (X = float, T = bf16): the 64 residual adds of a 32-block tower are then exact
// to f32, which halves the bf16 tower's distance from the f32 result (docs/encoder-cuda.md).
#define NORM_THREADS 256
#define NORM_PER_THREAD 8
template <typename X, typename T>
__device__ void add_rmsnorm(X* __restrict__ x, const T* __restrict__ delta, const T* __restrict__ w,
                            T* __restrict__ out, int cols, float eps) {
    long long row = blockIdx.x;
    X* xr = x + row * cols;
    const T* dr = delta ? delta + row * cols : nullptr;
    T* orow = out + row * cols;
    float v[NORM_PER_THREAD];
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < NORM_PER_THREAD; ++k) {
        int c = threadIdx.x + k * NORM_THREADS;
        v[k] = 0.0f;
        if (c < cols) {
            v[k] = to_f(xr[c]);
            if (dr) {
                v[k] = round_to<X>(v[k] + to_f(dr[c]));
                xr[c] = from_f<X>(v[k]);
            }
            ss += v[k] * v[k];
        }
    }
    float inv = rsqrtf(block_sum(ss) / (float)cols + eps);
#pragma unroll
    for (int k = 0; k < NORM_PER_THREAD; ++k) {
        int c = threadIdx.x + k * NORM_THREADS;
        if (c < cols) orow[c] = from_f<T>(round_to<T>(v[k] * inv) * to_f(w[c]));
    }
}

// 2D rotary embedding on q and k inside the packed qkv rows [rows, 3, heads, head_dim],
// in float, rounded back to T. One row per block, one thread per (head, k < head_dim/2);
// cos/sin hold head_dim/2 values per row.
template <typename T>
__device__ void rope_qk(T* __restrict__ qkv, const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                        int heads, int head_dim) {
    long long row = blockIdx.x;
    int half = head_dim / 2;
    int head = threadIdx.x / half, k = threadIdx.x % half;
    float c = cos_t[row * half + k], s = sin_t[row * half + k];
#pragma unroll
    for (int which = 0; which < 2; ++which) {  // 0: q, 1: k
        T* v = qkv + row * 3 * heads * head_dim + (long long)which * heads * head_dim + (long long)head * head_dim;
        float a = to_f(v[k]), b = to_f(v[k + half]);
        v[k] = from_f<T>(a * c - b * s);
        v[k + half] = from_f<T>(b * c + a * s);
    }
}

// out = T(T(silu(gate)) * up) for gu rows [gate (inter) | up (inter)]: row blockIdx.y,
// two columns per thread (inter is even).
template <typename T>
__device__ void silu_mul(const T* __restrict__ gu, T* __restrict__ out, int inter) {
    long long r = blockIdx.y;
    int c = 2 * (blockIdx.x * blockDim.x + threadIdx.x);
    if (c >= inter) return;
    const T* g = gu + r * 2 * inter;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        float gv = to_f(g[c + i]);
        float u = to_f(g[inter + c + i]);
        float sv = round_to<T>(gv / (1.0f + expf(-gv)));
        out[r * inter + c + i] = from_f<T>(sv * u);
    }
}

// x = T(gelu(x)), exact erf form.
template <typename T>
__device__ void gelu_erf(T* __restrict__ x, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v = to_f(x[i]);
        x[i] = from_f<T>(v * 0.5f * (1.0f + erff(v * 0.70710678118654752f)));
    }
}

// x = T(gelu_tanh(x)) as torch's F.gelu(approximate="tanh") (GeluKernel): in float,
// kBeta = float(M_SQRT2 * M_2_SQRTPI * 0.5) (the product taken in double, as torch's
// constexpr), kKappa = 0.044715f; x_cube = (x*x)*x, inner = kBeta * (x + kKappa*x_cube),
// 0.5*x*(1 + tanh(inner)) evaluated left to right. Every step is rounded on its own (no fma
// contraction, like torch's CPU vectorized kernel); tanhf is the accurate one (no fast math).
// Grid-stride, 256 threads.
template <typename T>
__device__ void gelu_tanh(T* __restrict__ x, long long n) {
    constexpr float kBeta = (float)(1.41421356237309504880 * 1.12837916709551257390 * 0.5);
    constexpr float kKappa = 0.044715f;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v = to_f(x[i]);
        float cube = __fmul_rn(__fmul_rn(v, v), v);
        float inner = __fmul_rn(kBeta, __fadd_rn(v, __fmul_rn(kKappa, cube)));
        x[i] = from_f<T>(__fmul_rn(__fmul_rn(0.5f, v), __fadd_rn(1.0f, tanhf(inner))));
    }
}

// LayerNorm of one row held in registers, torch's nn.LayerNorm in f32: v[k] is column
// threadIdx.x + k*NORM_THREADS (0 past cols); mean, biased variance mean((v-mean)^2)
// (two passes over the registers), out = T((v - mean) * rsqrt(var + eps) * w + b).
// Needs blockDim.x == NORM_THREADS.
template <typename T, int PER>
__device__ void layernorm_row(const float (&v)[PER], const T* __restrict__ w, const T* __restrict__ b, T* orow,
                              int cols, float eps) {
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < PER; ++k) s += v[k];
    float mean = block_sum(s) / (float)cols;
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < PER; ++k) {
        int c = threadIdx.x + k * NORM_THREADS;
        if (c < cols) {
            float d = v[k] - mean;
            ss += d * d;
        }
    }
    float rstd = rsqrtf(block_sum(ss) / (float)cols + eps);
#pragma unroll
    for (int k = 0; k < PER; ++k) {
        int c = threadIdx.x + k * NORM_THREADS;
        if (c < cols) orow[c] = from_f<T>((v[k] - mean) * rstd * to_f(w[c]) + to_f(b[c]));
    }
}

// The LayerNorm twin of add_rmsnorm (Qwen3-VL's norm1/norm2/merger norm): one row per block
// of 256 threads, cols <= 8 * 256 = 2048. x (f32 residual stream) += delta when delta is
// given (f32 add, stored back), then out = LayerNorm(T(x)) * w + b: the norm reads x rounded
// to T (the reference's hidden state is T), computes in f32 and rounds the output to T once.
template <typename T>
__device__ void add_layernorm(float* __restrict__ x, const T* __restrict__ delta, const T* __restrict__ w,
                              const T* __restrict__ b, T* __restrict__ out, int cols, float eps) {
    long long row = blockIdx.x;
    float* xr = x + row * cols;
    const T* dr = delta ? delta + row * cols : nullptr;
    float v[NORM_PER_THREAD];
#pragma unroll
    for (int k = 0; k < NORM_PER_THREAD; ++k) {
        int c = threadIdx.x + k * NORM_THREADS;
        v[k] = 0.0f;
        if (c < cols) {
            float xv = xr[c];
            if (dr) {
                xv += to_f(dr[c]);
                xr[c] = xv;
            }
            v[k] = round_to<T>(xv);
        }
    }
    layernorm_row<T, NORM_PER_THREAD>(v, w, b, out + row * cols, cols, eps);
}

// Plain LayerNorm of T rows (the deepstack mergers' post-shuffle norm over 4*hidden
// columns): one row per block of 256 threads, cols <= LN_WIDE_PER_THREAD * 256 = 8192,
// math as layernorm_row. out may equal x (in place): every read precedes the first barrier.
#define LN_WIDE_PER_THREAD 32
template <typename T>
__device__ void layernorm(const T* x, const T* __restrict__ w, const T* __restrict__ b, T* out, int cols, float eps) {
    long long row = blockIdx.x;
    const T* xr = x + row * cols;
    float v[LN_WIDE_PER_THREAD];
#pragma unroll
    for (int k = 0; k < LN_WIDE_PER_THREAD; ++k) {
        int c = threadIdx.x + k * NORM_THREADS;
        v[k] = c < cols ? to_f(xr[c]) : 0.0f;
    }
    layernorm_row<T, LN_WIDE_PER_THREAD>(v, w, b, out + row * cols, cols, eps);
}

// x (f32 residual stream) += delta when delta is given; out = T(x): the hidden state after a
// block, materialized for the deepstack mergers. Grid-stride over n elements.
template <typename T>
__device__ void add_round(float* __restrict__ x, const T* __restrict__ delta, T* __restrict__ out, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v = x[i];
        if (delta) {
            v += to_f(delta[i]);
            x[i] = v;
        }
        out[i] = from_f<T>(v);
    }
}

// Qwen3-VL's learned position embedding, bilinearly interpolated (HF 5.17):
// p = ((w0*t0 + w1*t1) + w2*t2) + w3*t3 in f32, each product and sum rounded on its own
// (torch's sequential .sum(1) of f32 products; no fma), with wj = wts[4r+j] and
// tj = table[idx[4r+j], c]; then x[r, c] = T(x + T(p)) (hidden + pos_embeds.to(dtype)).
// table is [num_positions, cols] of T. Grid-stride over rows*cols.
template <typename T>
__device__ void pos_embed_add(T* __restrict__ x, const T* __restrict__ table, const int* __restrict__ idx,
                              const float* __restrict__ wts, long long rows, int cols) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long n = rows * cols;
    for (; i < n; i += (long long)gridDim.x * blockDim.x) {
        long long r = i / cols;
        int c = (int)(i - r * cols);
        const int* ir = idx + 4 * r;
        const float* wr = wts + 4 * r;
        float p = __fmul_rn(wr[0], to_f(table[(long long)ir[0] * cols + c]));
#pragma unroll
        for (int j = 1; j < 4; ++j) p = __fadd_rn(p, __fmul_rn(wr[j], to_f(table[(long long)ir[j] * cols + c])));
        x[i] = from_f<T>(__fadd_rn(to_f(x[i]), round_to<T>(p)));
    }
}

// dst[r*dst_stride + dst_offset + c] = src[r*cols + c]: one output of the tower into its
// column block of the packed [main | deepstack0 | ...] embeddings. Grid-stride over rows*cols.
template <typename T>
__device__ void pack_columns(const T* __restrict__ src, T* __restrict__ dst, long long rows, int cols, int dst_stride,
                             int dst_offset) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long n = rows * cols;
    for (; i < n; i += (long long)gridDim.x * blockDim.x) {
        long long r = i / cols;
        int c = (int)(i - r * cols);
        dst[r * dst_stride + dst_offset + c] = src[i];
    }
}

// Variable-length attention, non-causal, online softmax (FlashAttention-style) on CUDA
// cores. One block = one head × a tile of up to 64 queries of one segment; tiles[3*b]
// gives (segment start, segment end, first query). qkv rows [rows, 3, heads, HD];
// out rows [rows, heads*HD]. Grid (tiles, heads), block ATT_TILE = 64 threads (one per
// query), no dynamic shared memory. Keys are staged in f32 tiles of KT keys (2·KT·HD·4
// bytes of static shared memory, within 48 KB): KT = 64 up to HD 80, 32 for HD 128 (64 KB
// otherwise). The online-softmax chunks of ATT_CHUNK keys start at seg_start + 8i whatever
// KT is (a multiple of 8), so KT does not change the result.
#define ATT_TILE 64
#define ATT_CHUNK 8
template <typename T, int HD, int KT = ATT_TILE>
__device__ void attention(const T* __restrict__ qkv, T* __restrict__ out, const int* __restrict__ tiles,
                          int heads, float scale) {
    static_assert(KT % ATT_CHUNK == 0, "key tile must be a multiple of ATT_CHUNK");
    static_assert(2 * KT * HD * 4 <= 48 * 1024, "key/value tiles exceed the static shared memory limit");
    __shared__ float ks[KT][HD];
    __shared__ float vs[KT][HD];
    int tile = blockIdx.x, head = blockIdx.y;
    int seg_start = tiles[3 * tile], seg_end = tiles[3 * tile + 1], q0 = tiles[3 * tile + 2];
    int qi = q0 + threadIdx.x;
    bool active = qi < seg_end && threadIdx.x < ATT_TILE;
    long long stride = 3LL * heads * HD;
    float q[HD], o[HD];
    float m = -1e30f, l = 0.0f;
    if (active) {
        const T* qr = qkv + (long long)qi * stride + (long long)head * HD;
#pragma unroll
        for (int d = 0; d < HD; ++d) {
            q[d] = to_f(qr[d]) * scale;
            o[d] = 0.0f;
        }
    }
    for (int kt = seg_start; kt < seg_end; kt += KT) {
        int n = min(KT, seg_end - kt);
        for (int e = threadIdx.x; e < n * HD; e += blockDim.x) {
            int j = e / HD, d = e % HD;
            const T* row = qkv + (long long)(kt + j) * stride + (long long)head * HD;
            ks[j][d] = to_f(row[(long long)heads * HD + d]);
            vs[j][d] = to_f(row[2LL * heads * HD + d]);
        }
        __syncthreads();
        if (active) {
            for (int c = 0; c < n; c += ATT_CHUNK) {
                float s[ATT_CHUNK];
                float mx = m;
#pragma unroll
                for (int jj = 0; jj < ATT_CHUNK; ++jj) {
                    float acc = -1e30f;
                    if (c + jj < n) {
                        acc = 0.0f;
#pragma unroll
                        for (int d = 0; d < HD; ++d) acc += q[d] * ks[c + jj][d];
                    }
                    s[jj] = acc;
                    mx = fmaxf(mx, acc);
                }
                float alpha = __expf(m - mx);
                l *= alpha;
#pragma unroll
                for (int d = 0; d < HD; ++d) o[d] *= alpha;
#pragma unroll
                for (int jj = 0; jj < ATT_CHUNK; ++jj) {
                    if (c + jj < n) {
                        float p = __expf(s[jj] - mx);
                        l += p;
#pragma unroll
                        for (int d = 0; d < HD; ++d) o[d] += p * vs[c + jj][d];
                    }
                }
                m = mx;
            }
        }
        __syncthreads();
    }
    if (active) {
        T* orow = out + (long long)qi * heads * HD + (long long)head * HD;
        float inv = 1.0f / l;
#pragma unroll
        for (int d = 0; d < HD; ++d) orow[d] = from_f<T>(o[d] * inv);
    }
}

// Variable-length attention on tensor cores, bf16 (FlashAttention-2 style): one block of
// 4 warps = one head × a tile of 64 queries (16 per warp), same tiles as `attention`.
// S = Q·Kᵀ and O += P·V are mma.sync.m16n8k16 (bf16 in, f32 accumulate); the online
// softmax runs on the S accumulators in registers (f32), P is rounded to bf16 for P·V as
// torch's flash kernels do, and the row sums use the f32 P. K and V tiles of 64 keys are
// staged in shared memory with a padded row stride (conflict-free fragment loads).
// Grid (tiles, heads), block TC_WARPS*32 = 128 threads, no dynamic shared memory (static:
// 2·64·(HDP+8)·2 bytes, 35 KB at HD 128). HD must be a multiple of 8: when it is not one of
// 16 (72), Q·Kᵀ runs over HDP = HD rounded up to 16 (80) with zero Q columns (registers;
// global memory is read only up to HD) and zero K columns (shared), which add exact zeros;
// P·V and the output use HD/8 n-tiles (9 for 72).
#define TC_WARPS 4
#define TC_KEYS 64
__device__ __forceinline__ unsigned int pack_bf16(float lo, float hi) {
    return (unsigned int)from_f<bf16_t>(lo) | ((unsigned int)from_f<bf16_t>(hi) << 16);
}
__device__ __forceinline__ void mma_bf16(float* d, const unsigned int* a, unsigned int b0, unsigned int b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <int HD>
__device__ void attention_tc(const bf16_t* __restrict__ qkv, bf16_t* __restrict__ out, const int* __restrict__ tiles,
                             int heads, float scale) {
    static_assert(HD % 8 == 0, "head_dim must be a multiple of 8");
    constexpr int KC = (HD + 15) / 16;  // k-chunks of Q·Kᵀ
    constexpr int HDP = KC * 16;        // HD padded with zeros to whole k-chunks
    constexpr int NT = HD / 8;          // n-tiles of O
    constexpr int LD = HDP + 8;         // padded shared row (bf16 elements): LD/2 words = 4 mod 8
    __shared__ __align__(16) bf16_t ks[TC_KEYS * LD];
    __shared__ __align__(16) bf16_t vs[TC_KEYS * LD];
    if constexpr (HDP != HD) {
        // K's padding columns HD..HDP-1 (one 16-byte vector): zero once, never staged over;
        // made visible by the first tile's barrier.
        static_assert(HDP - HD == 8, "padding is one 16-byte vector");
        for (int j = threadIdx.x; j < TC_KEYS; j += TC_WARPS * 32) *(uint4*)(ks + j * LD + HD) = make_uint4(0, 0, 0, 0);
    }
    int tile = blockIdx.x, head = blockIdx.y;
    int seg_start = tiles[3 * tile], seg_end = tiles[3 * tile + 1], q0 = tiles[3 * tile + 2];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int g = lane >> 2, t = lane & 3;
    long long stride = 3LL * heads * HD;
    const bf16_t* base = qkv + (long long)head * HD;
    // Q fragments (rows g and g+8 of this warp's 16 queries); rows past the segment are 0.
    int r0 = q0 + warp * 16 + g, r1 = r0 + 8;
    unsigned int qa[KC][4];
#pragma unroll
    for (int c = 0; c < KC; ++c) {
        int col = c * 16 + t * 2;
        bool hi = c * 16 + 8 < HD;  // columns col+8, col+9 inside the head (else padding: 0)
        qa[c][0] = r0 < seg_end ? *(const unsigned int*)(base + r0 * stride + col) : 0u;
        qa[c][1] = r1 < seg_end ? *(const unsigned int*)(base + r1 * stride + col) : 0u;
        qa[c][2] = hi && r0 < seg_end ? *(const unsigned int*)(base + r0 * stride + col + 8) : 0u;
        qa[c][3] = hi && r1 < seg_end ? *(const unsigned int*)(base + r1 * stride + col + 8) : 0u;
    }
    float o[NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m0 = -1e30f, m1 = -1e30f, l0 = 0.0f, l1 = 0.0f;
    const float sl2 = scale * 1.4426950408889634f;  // exp(x) = exp2(x·log2 e)
    for (int kt = seg_start; kt < seg_end; kt += TC_KEYS) {
        int nk = min(TC_KEYS, seg_end - kt);
        // Stage K and V (16-byte vectors; rows past the segment are zero).
        for (int e = threadIdx.x; e < TC_KEYS * (HD / 8); e += TC_WARPS * 32) {
            int j = e / (HD / 8), v8 = (e % (HD / 8)) * 8;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = kv;
            if (j < nk) {
                const bf16_t* row = base + (long long)(kt + j) * stride;
                kv = *(const uint4*)(row + (long long)heads * HD + v8);
                vv = *(const uint4*)(row + 2LL * heads * HD + v8);
            }
            *(uint4*)(ks + j * LD + v8) = kv;
            *(uint4*)(vs + j * LD + v8) = vv;
        }
        __syncthreads();
        // S = Q·Kᵀ: 8 n-tiles of 8 keys.
        float sc[TC_KEYS / 8][4];
#pragma unroll
        for (int n = 0; n < TC_KEYS / 8; ++n) {
            sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
#pragma unroll
            for (int c = 0; c < KC; ++c) {
                const bf16_t* kr = ks + (n * 8 + g) * LD + c * 16 + t * 2;
                mma_bf16(sc[n], qa[c], *(const unsigned int*)kr, *(const unsigned int*)(kr + 8));
            }
        }
        // Online softmax on rows g (c0, c1) and g+8 (c2, c3).
        float mx0 = m0, mx1 = m1;
#pragma unroll
        for (int n = 0; n < TC_KEYS / 8; ++n) {
            int key = n * 8 + t * 2;
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                bool valid = key + i < nk;
                sc[n][i] = valid ? sc[n][i] * sl2 : -1e30f;
                sc[n][2 + i] = valid ? sc[n][2 + i] * sl2 : -1e30f;
                mx0 = fmaxf(mx0, sc[n][i]);
                mx1 = fmaxf(mx1, sc[n][2 + i]);
            }
        }
#pragma unroll
        for (int off = 1; off < 4; off <<= 1) {
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
        }
        float a0 = exp2f(m0 - mx0), a1 = exp2f(m1 - mx1);
        m0 = mx0;
        m1 = mx1;
        l0 *= a0;
        l1 *= a1;
#pragma unroll
        for (int n = 0; n < NT; ++n) {
            o[n][0] *= a0;
            o[n][1] *= a0;
            o[n][2] *= a1;
            o[n][3] *= a1;
        }
#pragma unroll
        for (int n = 0; n < TC_KEYS / 8; ++n) {
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                sc[n][i] = exp2f(sc[n][i] - m0);
                sc[n][2 + i] = exp2f(sc[n][2 + i] - m1);
                l0 += sc[n][i];
                l1 += sc[n][2 + i];
            }
        }
        // O += P·V: P's accumulators become A fragments (16 keys per k-chunk).
#pragma unroll
        for (int kc = 0; kc < TC_KEYS / 16; ++kc) {
            unsigned int pa[4] = {pack_bf16(sc[2 * kc][0], sc[2 * kc][1]), pack_bf16(sc[2 * kc][2], sc[2 * kc][3]),
                                  pack_bf16(sc[2 * kc + 1][0], sc[2 * kc + 1][1]),
                                  pack_bf16(sc[2 * kc + 1][2], sc[2 * kc + 1][3])};
            const bf16_t* v0 = vs + (kc * 16 + t * 2) * LD + g;
#pragma unroll
            for (int n = 0; n < NT; ++n) {
                const bf16_t* v = v0 + n * 8;
                unsigned int b0 = (unsigned int)v[0] | ((unsigned int)v[LD] << 16);
                unsigned int b1 = (unsigned int)v[8 * LD] | ((unsigned int)v[9 * LD] << 16);
                mma_bf16(o[n], pa, b0, b1);
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, off);
        l1 += __shfl_xor_sync(0xffffffffu, l1, off);
    }
    float i0 = 1.0f / l0, i1 = 1.0f / l1;
    long long ostride = (long long)heads * HD;
#pragma unroll
    for (int n = 0; n < NT; ++n) {
        int col = head * HD + n * 8 + t * 2;
        if (r0 < seg_end) *(unsigned int*)(out + r0 * ostride + col) = pack_bf16(o[n][0] * i0, o[n][1] * i0);
        if (r1 < seg_end) *(unsigned int*)(out + r1 * ostride + col) = pack_bf16(o[n][2] * i1, o[n][3] * i1);
    }
}
// attention_tc{HD}_bf16: one entry point per head size.
#define ATTENTION_TC(HD)                                                                              \
    extern "C" __global__ void __launch_bounds__(TC_WARPS * 32)                                       \
        attention_tc##HD##_bf16(const bf16_t* qkv, bf16_t* out, const int* tiles, int heads, float scale) { \
        attention_tc<HD>(qkv, out, tiles, heads, scale);                                              \
    }
ATTENTION_TC(32)
ATTENTION_TC(64)
ATTENTION_TC(72)
ATTENTION_TC(80)
ATTENTION_TC(128)

// FlashAttention-2-class varlen attention, bf16 on tensor cores (sm_80+), for segments
// longer than one key tile (the per-slice full attention; 64-token windows keep
// `attention_tc*`). Same tiles (segment start, segment end, first query), same math as
// `attention_tc`: S = Q·Kᵀ and O += P·V on mma.sync (bf16 in, f32 accumulate), online
// softmax in f32, P rounded to bf16 for P·V, row sums from the f32 P, O / l rounded to bf16.
// One block = one head × QR = NW·16·MT queries: NW warps of MT m-tiles (16 rows each), so
// every K/V fragment read from shared memory feeds MT MMAs. K/V tiles of KEYS keys are
// double-buffered in dynamic shared memory and loaded with cp.async (zero-filled past the
// segment) while the previous tile is computed: one barrier per tile. Fragments come from
// ldmatrix (.trans for V); rows are HD rounded up to an odd number of 16-byte vectors
// (conflict-free ldmatrix). Q stays in registers (QS = false) or, for large HD, in shared
// memory, read with ldmatrix per tile (QS = true, as FA2 does for head_dim 128).
// head_dim 72 (= 4·16 + 8): Q·Kᵀ runs four m16n8k16 chunks and one m16n8k8, so nothing is
// padded and global memory is read only up to HD; O has HD/8 n-tiles (9).
// Softmax: exponentials are ex2(s·scale·log2e − m·scale·log2e) (one FMA each); the row
// maximum m a warp subtracts is updated only when some row's maximum grew by more than
// 2^8 (then O and l are rescaled): between updates P ≤ 256, which changes no result in f32
// (softmax is shift-invariant; bf16 rounding of P is relative) and skips the O rescale on
// almost every tile.
// Grid (tiles, heads), block NW·32 threads, dynamic shared memory FA_SMEM(...) bytes
// (encoder/src/cuda/mod.rs computes the same; the kernel traps if given less).
extern __shared__ __align__(16) unsigned char fa_smem[];

__device__ __forceinline__ unsigned int cvt_bf16x2(float lo, float hi) {
    unsigned int r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ void mma_bf16_k8(float* d, unsigned int a0, unsigned int a1, unsigned int b0) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(b0));
}
__device__ __forceinline__ void ldsm_x4(unsigned int* r, unsigned int addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(unsigned int* r, unsigned int addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x2_t(unsigned int* r, unsigned int addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(addr));
}
// 16 bytes global → shared, bypassing L1; zero-filled when !valid (gmem is then not read).
__device__ __forceinline__ void cp_async16(unsigned int saddr, const void* gmem, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(saddr), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// Shared row length (bf16 elements): HD rounded up to an odd number of 16-byte vectors.
#define FA_LD(HD) ((((HD) / 8) % 2 == 1) ? (HD) : (HD) + 8)
// Dynamic shared memory (bytes): Q (QS) + 2 stages × (K + V).
#define FA_SMEM(HD, QR, KEYS, QS) ((((QS) ? (QR) : 0) + 4 * (KEYS)) * FA_LD(HD) * 2)

template <int HD, int NW, int MT, int KEYS, bool QS>
__device__ __forceinline__ void attention_fa(const bf16_t* __restrict__ qkv, bf16_t* __restrict__ out,
                                             const int* __restrict__ tiles, int heads, float scale) {
    static_assert(HD % 8 == 0 && KEYS % 32 == 0, "head_dim must be a multiple of 8, KEYS of 32");
    static_assert(!QS || HD % 16 == 0, "Q in shared memory needs whole k-chunks");
    constexpr int KC = HD / 16;             // m16n8k16 chunks of Q·Kᵀ
    constexpr bool K8 = HD % 16 != 0;       // plus one m16n8k8 chunk (HD 72)
    constexpr int NT = HD / 8;              // n-tiles of O
    constexpr int SN = KEYS / 8;            // n-tiles of S
    constexpr int LD = FA_LD(HD);
    constexpr int QR = NW * 16 * MT;        // queries per block
    constexpr int THREADS = NW * 32;
    constexpr int TILE_B = KEYS * LD * 2;   // bytes of one K or V tile
    constexpr int Q_B = QS ? QR * LD * 2 : 0;
    constexpr int SMEM = FA_SMEM(HD, QR, KEYS, QS);
    static_assert(SMEM == Q_B + 4 * TILE_B, "FA_SMEM");
    {
        unsigned int dyn;
        asm("mov.u32 %0, %%dynamic_smem_size;\n" : "=r"(dyn));
        if (dyn < (unsigned int)SMEM) __trap();  // launched with too little shared memory
    }
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int g = lane >> 2, t = lane & 3;
    const int tile = blockIdx.x, head = blockIdx.y;
    const int seg_start = tiles[3 * tile], seg_end = tiles[3 * tile + 1], q0 = tiles[3 * tile + 2];
    const long long stride = 3LL * heads * HD;
    const bf16_t* qb = qkv + (long long)head * HD;
    const bf16_t* kb = qb + (long long)heads * HD;
    const bf16_t* vb = kb + (long long)heads * HD;
    const unsigned int sq = (unsigned int)__cvta_generic_to_shared(fa_smem);
    const unsigned int skv = sq + Q_B;  // stage s: K at skv + 2·s·TILE_B, V after it
    const int ntiles = (seg_end - seg_start + KEYS - 1) / KEYS;

    // K and V rows [kt, kt + KEYS) of the segment into a stage (zeros past its end).
    auto load_kv = [&](int it, int stage) {
        const int kt = seg_start + it * KEYS, nk = seg_end - kt;
        const unsigned int sk = skv + stage * 2 * TILE_B;
#pragma unroll 1
        for (int e = tid; e < KEYS * (HD / 8); e += THREADS) {
            const int j = e / (HD / 8), c8 = (e % (HD / 8)) * 8;
            const bool ok = j < nk;
            const long long off = (long long)(ok ? kt + j : seg_start) * stride + c8;
            const unsigned int so = (j * LD + c8) * 2;
            cp_async16(sk + so, kb + off, ok);
            cp_async16(sk + TILE_B + so, vb + off, ok);
        }
    };

    // Q: registers (rows g, g+8 of each m-tile; zero past the segment) or shared memory.
    const int wq = q0 + warp * 16 * MT;  // this warp's first query
    unsigned int qa[QS ? 1 : MT][QS ? 1 : KC + K8][4];
    if constexpr (QS) {
#pragma unroll
        for (int e = tid; e < QR * (HD / 8); e += THREADS) {
            const int j = e / (HD / 8), c8 = (e % (HD / 8)) * 8;
            const bool ok = q0 + j < seg_end;
            cp_async16(sq + (j * LD + c8) * 2, qb + (long long)(ok ? q0 + j : seg_start) * stride + c8, ok);
        }
    } else {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            const int r0 = wq + mt * 16 + g, r1 = r0 + 8;
            const bf16_t* p0 = qb + (long long)r0 * stride + t * 2;
            const bf16_t* p1 = qb + (long long)r1 * stride + t * 2;
#pragma unroll
            for (int c = 0; c < KC + K8; ++c) {
                const bool hi = c < KC;  // a k16 chunk (else the k8 tail: a0, a1 only)
                qa[mt][c][0] = r0 < seg_end ? *(const unsigned int*)(p0 + c * 16) : 0u;
                qa[mt][c][1] = r1 < seg_end ? *(const unsigned int*)(p1 + c * 16) : 0u;
                qa[mt][c][2] = hi && r0 < seg_end ? *(const unsigned int*)(p0 + c * 16 + 8) : 0u;
                qa[mt][c][3] = hi && r1 < seg_end ? *(const unsigned int*)(p1 + c * 16 + 8) : 0u;
            }
        }
    }
    load_kv(0, 0);
    cp_async_commit();

    // ldmatrix lane offsets (bytes). A-style (Q; V.trans): row (lane & 7) + 8·bit3, column
    // 8·bit4. K (B of Q·Kᵀ, two n-tiles of one k-chunk): key (lane & 7) + 8·bit4, column
    // 8·bit3. K for the k8 tail (four n-tiles): key lane, column HD − 8. V x2 (odd NT):
    // key lane & 15.
    const unsigned int a_off = (((lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8) * 2;
    const unsigned int k_off = (((lane & 7) + (lane >> 4) * 8) * LD + ((lane >> 3) & 1) * 8) * 2;
    const unsigned int k8_off = (lane * LD + (HD - 8)) * 2;
    const unsigned int v2_off = ((lane & 15) * LD + (NT - 1) * 8) * 2;
    const unsigned int q_off = sq + warp * 16 * MT * LD * 2 + a_off;

    float o[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int n = 0; n < NT; ++n) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.0f;
    // Per row (m-tile, g / g+8): the subtracted maximum (raw score units) and the partial
    // row sum of this thread's columns.
    float m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) m[mt][0] = m[mt][1] = -__int_as_float(0x7f800000), l[mt][0] = l[mt][1] = 0.0f;
    const float sl2 = scale * 1.4426950408889634f;  // exp(x·scale) = exp2(x·scale·log2 e)

    for (int it = 0; it < ntiles; ++it) {
        cp_async_wait_all();
        __syncthreads();  // tile it is in shared memory; everyone is done with tile it − 1
        if (it + 1 < ntiles) load_kv(it + 1, (it + 1) & 1);
        cp_async_commit();
        const unsigned int sk = skv + (it & 1) * 2 * TILE_B, sv = sk + TILE_B;

        // S = Q·Kᵀ
        float s[MT][SN][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int n = 0; n < SN; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.0f;
#pragma unroll
        for (int c = 0; c < KC; ++c) {
            unsigned int qf[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                if constexpr (QS) {
                    ldsm_x4(qf[mt], q_off + mt * 16 * LD * 2 + c * 32);
                } else {
#pragma unroll
                    for (int i = 0; i < 4; ++i) qf[mt][i] = qa[mt][c][i];
                }
            }
#pragma unroll
            for (int np = 0; np < SN / 2; ++np) {
                unsigned int b[4];
                ldsm_x4(b, sk + np * 16 * LD * 2 + k_off + c * 32);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_bf16(s[mt][2 * np], qf[mt], b[0], b[1]);
                    mma_bf16(s[mt][2 * np + 1], qf[mt], b[2], b[3]);
                }
            }
        }
        if constexpr (K8) {
#pragma unroll
            for (int nq = 0; nq < SN / 4; ++nq) {
                unsigned int b[4];
                ldsm_x4(b, sk + nq * 32 * LD * 2 + k8_off);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int i = 0; i < 4; ++i) mma_bf16_k8(s[mt][4 * nq + i], qa[mt][KC][0], qa[mt][KC][1], b[i]);
            }
        }
        // Keys past the segment (last tile only): −inf.
        const int nk = seg_end - (seg_start + it * KEYS);
        if (nk < KEYS) {
#pragma unroll
            for (int n = 0; n < SN; ++n)
#pragma unroll
                for (int i = 0; i < 2; ++i)
                    if (n * 8 + t * 2 + i >= nk)
#pragma unroll
                        for (int mt = 0; mt < MT; ++mt) s[mt][n][i] = s[mt][n][2 + i] = -__int_as_float(0x7f800000);
        }
        // Row maxima of this tile (the quad of a row holds its 2·SN columns).
        float mx[MT][2];
        bool grow = false;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            mx[mt][0] = m[mt][0];
            mx[mt][1] = m[mt][1];
#pragma unroll
            for (int n = 0; n < SN; ++n) {
                mx[mt][0] = fmaxf(mx[mt][0], fmaxf(s[mt][n][0], s[mt][n][1]));
                mx[mt][1] = fmaxf(mx[mt][1], fmaxf(s[mt][n][2], s[mt][n][3]));
            }
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                mx[mt][h] = fmaxf(mx[mt][h], __shfl_xor_sync(0xffffffffu, mx[mt][h], 1));
                mx[mt][h] = fmaxf(mx[mt][h], __shfl_xor_sync(0xffffffffu, mx[mt][h], 2));
                grow |= (mx[mt][h] - m[mt][h]) * sl2 > 8.0f;  // true while m is −inf
            }
        }
        if (__any_sync(0xffffffffu, grow)) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const float alpha = ex2((m[mt][h] - mx[mt][h]) * sl2);  // 0 on the first tile
                    m[mt][h] = mx[mt][h];
                    l[mt][h] *= alpha;
#pragma unroll
                    for (int n = 0; n < NT; ++n) {
                        o[mt][n][2 * h] *= alpha;
                        o[mt][n][2 * h + 1] *= alpha;
                    }
                }
        }
        // P = exp2(s·sl2 − m·sl2) (f32 row sums), rounded to bf16 pairs: the A fragments of P·V.
        unsigned int p[MT][SN][2];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            const float ms0 = m[mt][0] * sl2, ms1 = m[mt][1] * sl2;
#pragma unroll
            for (int n = 0; n < SN; ++n) {
                const float e0 = ex2(fmaf(s[mt][n][0], sl2, -ms0)), e1 = ex2(fmaf(s[mt][n][1], sl2, -ms0));
                const float e2 = ex2(fmaf(s[mt][n][2], sl2, -ms1)), e3 = ex2(fmaf(s[mt][n][3], sl2, -ms1));
                l[mt][0] += e0 + e1;
                l[mt][1] += e2 + e3;
                p[mt][n][0] = cvt_bf16x2(e0, e1);
                p[mt][n][1] = cvt_bf16x2(e2, e3);
            }
        }
        // O += P·V: k-chunks of 16 keys, V fragments by ldmatrix.trans (two n-tiles each).
#pragma unroll
        for (int kc = 0; kc < KEYS / 16; ++kc) {
            const unsigned int vrow = sv + kc * 16 * LD * 2;
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) {
                unsigned int b[4];
                ldsm_x4_t(b, vrow + a_off + np * 32);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    const unsigned int pa[4] = {p[mt][2 * kc][0], p[mt][2 * kc][1], p[mt][2 * kc + 1][0],
                                                p[mt][2 * kc + 1][1]};
                    mma_bf16(o[mt][2 * np], pa, b[0], b[1]);
                    mma_bf16(o[mt][2 * np + 1], pa, b[2], b[3]);
                }
            }
            if constexpr (NT % 2 == 1) {
                unsigned int b[2];
                ldsm_x2_t(b, vrow + v2_off);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    const unsigned int pa[4] = {p[mt][2 * kc][0], p[mt][2 * kc][1], p[mt][2 * kc + 1][0],
                                                p[mt][2 * kc + 1][1]};
                    mma_bf16(o[mt][NT - 1], pa, b[0], b[1]);
                }
            }
        }
    }

    // O / l, rounded to bf16.
    const long long ostride = (long long)heads * HD;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        const int r0 = wq + mt * 16 + g, r1 = r0 + 8;
        float l0 = l[mt][0], l1 = l[mt][1];
        l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
        l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
        const float i0 = 1.0f / l0, i1 = 1.0f / l1;
        bf16_t* o0 = out + (long long)r0 * ostride + head * HD + t * 2;
        bf16_t* o1 = out + (long long)r1 * ostride + head * HD + t * 2;
#pragma unroll
        for (int n = 0; n < NT; ++n) {
            if (r0 < seg_end) *(unsigned int*)(o0 + n * 8) = cvt_bf16x2(o[mt][n][0] * i0, o[mt][n][1] * i0);
            if (r1 < seg_end) *(unsigned int*)(o1 + n * 8) = cvt_bf16x2(o[mt][n][2] * i1, o[mt][n][3] * i1);
        }
    }
}
// Entry points: attention_fa{HD}_q{QR}_bf16. q128 for long segments (many blocks), q64 when
// 128-query blocks would not fill the GPU. NW, MT, KEYS, QS and the minimum blocks per SM
// (__launch_bounds__) per HD; mod.rs mirrors QR, NW·32 and FA_SMEM.
#define FA_ENTRY(HD, QR, NW, MT, KEYS, QS, MINB)                                                                \
    extern "C" __global__ void __launch_bounds__(NW * 32, MINB)                                               \
        attention_fa##HD##_q##QR##_bf16(const bf16_t* qkv, bf16_t* out, const int* tiles, int heads, float scale) { \
        static_assert(NW * 16 * MT == QR, "queries per block");                                               \
        attention_fa<HD, NW, MT, KEYS, QS>(qkv, out, tiles, heads, scale);                                    \
    }
FA_ENTRY(32, 128, 4, 2, 64, false, 2)
FA_ENTRY(64, 128, 4, 2, 64, false, 2)
FA_ENTRY(72, 128, 4, 2, 64, false, 2)
FA_ENTRY(80, 128, 4, 2, 64, false, 2)
FA_ENTRY(128, 128, 4, 2, 64, true, 1)
FA_ENTRY(32, 64, 4, 1, 64, false, 3)
FA_ENTRY(64, 64, 4, 1, 64, false, 3)
FA_ENTRY(72, 64, 4, 1, 64, false, 3)
FA_ENTRY(80, 64, 4, 1, 64, false, 3)
FA_ENTRY(128, 64, 4, 1, 64, false, 2)

// Entry points, one per element type.
#define ENTRY_POINTS(SUFFIX, T)                                                                                      \
    extern "C" __global__ void __launch_bounds__(NORM_THREADS)                                                       \
        add_rmsnorm_##SUFFIX(float* x, const T* delta, const T* w, T* out, int cols, float eps) {                    \
        add_rmsnorm<float, T>(x, delta, w, out, cols, eps);                                                          \
    }                                                                                                                \
    extern "C" __global__ void rope_qk_##SUFFIX(T* qkv, const float* c, const float* s, int heads, int hd) {         \
        rope_qk<T>(qkv, c, s, heads, hd);                                                                            \
    }                                                                                                                \
    extern "C" __global__ void silu_mul_##SUFFIX(const T* gu, T* out, int inter) { silu_mul<T>(gu, out, inter); }    \
    extern "C" __global__ void gelu_erf_##SUFFIX(T* x, long long n) { gelu_erf<T>(x, n); }                           \
    extern "C" __global__ void __launch_bounds__(ATT_TILE) attention80_##SUFFIX(const T* qkv, T* out,                 \
                                                                                const int* tiles, int heads,         \
                                                                                float scale) {                       \
        attention<T, 80>(qkv, out, tiles, heads, scale);                                                             \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(ATT_TILE) attention32_##SUFFIX(const T* qkv, T* out,                 \
                                                                                const int* tiles, int heads,         \
                                                                                float scale) {                       \
        attention<T, 32>(qkv, out, tiles, heads, scale);                                                             \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(ATT_TILE) attention64_##SUFFIX(const T* qkv, T* out,                 \
                                                                                const int* tiles, int heads,         \
                                                                                float scale) {                       \
        attention<T, 64>(qkv, out, tiles, heads, scale);                                                             \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(ATT_TILE) attention72_##SUFFIX(const T* qkv, T* out,                 \
                                                                                const int* tiles, int heads,         \
                                                                                float scale) {                       \
        attention<T, 72>(qkv, out, tiles, heads, scale);                                                             \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(ATT_TILE) attention128_##SUFFIX(const T* qkv, T* out,                \
                                                                                 const int* tiles, int heads,        \
                                                                                 float scale) {                      \
        attention<T, 128, 32>(qkv, out, tiles, heads, scale);                                                        \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(NORM_THREADS)                                                       \
        add_layernorm_##SUFFIX(float* x, const T* delta, const T* w, const T* b, T* out, int cols, float eps) {      \
        add_layernorm<T>(x, delta, w, b, out, cols, eps);                                                            \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(NORM_THREADS)                                                       \
        layernorm_##SUFFIX(const T* x, const T* w, const T* b, T* out, int cols, float eps) {                        \
        layernorm<T>(x, w, b, out, cols, eps);                                                                       \
    }                                                                                                                \
    extern "C" __global__ void add_round_##SUFFIX(float* x, const T* delta, T* out, long long n) {                   \
        add_round<T>(x, delta, out, n);                                                                              \
    }                                                                                                                \
    extern "C" __global__ void gelu_tanh_##SUFFIX(T* x, long long n) { gelu_tanh<T>(x, n); }                         \
    extern "C" __global__ void pos_embed_add_##SUFFIX(T* x, const T* table, const int* idx, const float* wts,        \
                                                      long long rows, int cols) {                                    \
        pos_embed_add<T>(x, table, idx, wts, rows, cols);                                                            \
    }                                                                                                                \
    extern "C" __global__ void pack_columns_##SUFFIX(const T* src, T* dst, long long rows, int cols, int dst_stride, \
                                                     int dst_offset) {                                               \
        pack_columns<T>(src, dst, rows, cols, dst_stride, dst_offset);                                               \
    }

ENTRY_POINTS(f32, float)
ENTRY_POINTS(bf16, bf16_t)

#define GATHER(S_NAME, S, D_NAME, D)                                                                         \
    extern "C" __global__ void gather_##S_NAME##_to_##D_NAME(const S* s, D* d, const unsigned int* o,        \
                                                             long long rows, int cols) {                     \
        gather_rows<S, D>(s, d, o, rows, cols);                                                              \
    }
GATHER(f32, float, f32, float)
GATHER(f32, float, bf16, bf16_t)
GATHER(bf16, bf16_t, bf16, bf16_t)
GATHER(bf16, bf16_t, f32, float)
