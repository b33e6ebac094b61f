// Qwen-VL preprocessing of one decoded frame, in two passes that reproduce the CPU
// reference (codec/src/preprocess) operation for operation. Compiled with --fmad=false:
// every fused multiply-add below is an explicit fmaf, exactly where the CPU path uses
// f32::mul_add; everything else rounds after each operation, as on the CPU.
//
// Pass 1 (convert_resize_h): YUV (NV12/P016 or planar 4:4:4) -> RGB levels (8-bit values
//   held as float) in display orientation, then the horizontal bicubic-antialias pass,
//   into tmp[3][display_h][out_w].
// Pass 2 (resize_v_patchify): vertical pass, clamp + round to 8-bit, normalize, and
//   scatter into the [t*h*w, 3*T*P*P] patch layout (float32 or bfloat16) of the plan's
//   patch P, merge M and temporal patch T (Qwen2.5-VL 14/2/2: 1176 columns; Qwen3-VL
//   16/2/2: 1536).
//
// Both passes have two arithmetics, as the CPU path (codec/src/preprocess/resize.rs):
// torchvision's float32 resize (qwen-vl-utils; float tap weights, precision == 0) and
// torch's uint8 kernel (HF's video processors; int16 tap weights with `precision`
// fraction bits: clamp((2^(precision-1) + sum x*w) >> precision, 0, 255) per pass, the
// horizontal pass's result rounded to 8 bits before the vertical one). A table for an
// unchanged size is one float tap of weight 1, exact in either arithmetic.

struct ColorParams {
    float y_offset, y_scale, c_offset, c_scale;
    float cr_r, cb_g, cr_g, cb_b;
    int identity;  // GBR stored in YUV planes
    // 0: accurate (the floats above); 1: swscale's unscaled converter (8-bit 4:2:0);
    // 2: swscale's look-up-table arithmetic (wider 4:2:0, 4:4:4). codec/src/preprocess/swscale.rs.
    int mode;
    int bits;
    int left_sited;  // 4:2:0 chroma on the left luma column: moved to the centre in mode 2
    int y_coeff, vr, ub, ug, vg, y_offset_i;  // unscaled converter, Q13
    int cy, oy, base, crv, cbu, cgu, cgv;     // tables
};

struct Surface {
    const unsigned char* luma;
    const unsigned char* chroma;  // NV12/P016: interleaved UV; 4:4:4: U plane, V follows
    long long chroma_plane_bytes; // 4:4:4: bytes from the U plane to the V plane
    int pitch;                    // bytes per row
    int width, height;            // visible size (source orientation)
    int wide;                     // 16-bit samples
    int shift;                    // right shift of 16-bit samples (P016 holds data in the MSBs)
    int chroma420;                // 1: NV12/P016, 0: planar 4:4:4
};

__device__ __forceinline__ float sample(const unsigned char* row, int i, int wide, int shift) {
    if (wide) {
        unsigned short v = reinterpret_cast<const unsigned short*>(row)[i];
        return (float)(v >> shift);
    }
    return (float)row[i];
}

__device__ __forceinline__ float level(float v) {
    // (v * 255).clamp(0, 255).round_ties_even()
    float x = __fmul_rn(v, 255.0f);
    x = x < 0.0f ? 0.0f : (x > 255.0f ? 255.0f : x);
    return rintf(x);
}

// Chroma sample `comp` (0 = Cb, 1 = Cr) at chroma coordinates (cx, cy).
__device__ __forceinline__ float chroma_at(const Surface& s, int comp, int cx, int cy) {
    if (s.chroma420) {
        const unsigned char* row = s.chroma + (long long)cy * s.pitch;
        return sample(row, 2 * cx + comp, s.wide, s.shift);
    }
    const unsigned char* plane = s.chroma + comp * s.chroma_plane_bytes;
    return sample(plane + (long long)cy * s.pitch, cx, s.wide, s.shift);
}

// Bilinear MPEG-2-sited chroma at luma position (x, y), as codec/src/preprocess/color.rs.
__device__ float chroma_upsampled(const Surface& s, int comp, int x, int y) {
    if (!s.chroma420) {
        return chroma_at(s, comp, x, y);
    }
    int cw = (s.width + 1) / 2, ch = (s.height + 1) / 2;
    int c0 = y / 2, c1;
    if (y % 2 == 0) {
        c1 = c0 > 0 ? c0 - 1 : 0;
    } else {
        c1 = c0 + 1 < ch ? c0 + 1 : ch - 1;
    }
    const float w1 = 0.25f;
    int i = x / 2;
    // blend_rows: a * (1 - w1) + b * w1
    float v0 = __fadd_rn(__fmul_rn(chroma_at(s, comp, i, c0), 1.0f - w1), __fmul_rn(chroma_at(s, comp, i, c1), w1));
    if (x % 2 == 0) {
        return v0;
    }
    int i1 = i + 1 < cw ? i + 1 : cw - 1;
    float v1 = __fadd_rn(__fmul_rn(chroma_at(s, comp, i1, c0), 1.0f - w1), __fmul_rn(chroma_at(s, comp, i1, c1), w1));
    return __fadd_rn(__fmul_rn(0.5f, v0), __fmul_rn(0.5f, v1));
}

__device__ __forceinline__ int clamp_u8(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }

// A wide sample rounded to 8 bits as swscale's input stage does; 8-bit samples as they are.
__device__ __forceinline__ int narrow(int v, int bits) {
    if (bits <= 8) return v;
    int shift = 15 - (bits > 15 ? 15 : bits);
    return (int)((((long long)v << shift) * 4096 + (1 << 18)) >> 19);
}

// swscale's C look-up tables, as closed forms (Swscale::table).
__device__ __forceinline__ int table_step(int c, int inc) {
    return (int)(((long long)c * inc) >> 16) - (inc >> 9);
}
__device__ __forceinline__ int table_luma(const ColorParams& p, int k) {
    long long v = ((long long)(k + p.base) * p.cy - (384LL << 16) - p.oy + 0x8000) >> 16;
    return clamp_u8((int)v);
}

// Chroma sample (comp, cx, row) as swscale's 15-bit intermediate: left-sited chroma moved
// to the centre with (3*C[k] + C[k+1]) / 4 in Q14 taps, else just widened.
__device__ __forceinline__ long long chroma_15bit(const Surface& s, const ColorParams& p,
                                                  int comp, int cx, int cw, int row) {
    int bits = p.bits > 15 ? 15 : (p.bits < 9 ? 9 : p.bits);
    long long c = (long long)chroma_at(s, comp, cx, row);
    if (p.left_sited) {
        long long next = (long long)chroma_at(s, comp, cx + 1 < cw ? cx + 1 : cw - 1, row);
        return (c * 12288 + next * 4096) >> (bits - 1);
    }
    return c << (15 - bits);
}

// The reference readers' conversion (codec/src/preprocess/swscale.rs), integers only.
__device__ void rgb_swscale(const Surface& s, const ColorParams& p, int x, int y, float out[3]) {
    int Y = (int)sample(s.luma + (long long)y * s.pitch, x, s.wide, s.shift);
    if (p.mode == 1) {
        // Each chroma sample serves its 2x2 block; 16-bit fixed point, floored products.
        int U = (int)chroma_at(s, 0, x / 2, y / 2), V = (int)chroma_at(s, 1, x / 2, y / 2);
        int yy = ((8 * Y - p.y_offset_i) * p.y_coeff) >> 16;
        int u = 8 * (U - 128), v = 8 * (V - 128);
        out[0] = (float)clamp_u8(yy + ((v * p.vr) >> 16));
        out[1] = (float)clamp_u8(yy + (((u * p.ug) >> 16) + ((v * p.vg) >> 16)));
        out[2] = (float)clamp_u8(yy + ((u * p.ub) >> 16));
        return;
    }
    int U, V;
    if (s.chroma420) {
        // Wide 4:2:0: chroma rows blended 1/4 and 3/4 (centre-sited, edges clamped).
        int rows = (s.height + 1) / 2, k = y / 2, a, b;
        long long wa;
        if (y % 2 == 0) { a = k > 0 ? k - 1 : 0; b = k; wa = 1024; }
        else { a = k; b = k + 1 < rows ? k + 1 : rows - 1; wa = 3072; }
        int cx = x / 2, cw = (s.width + 1) / 2;
        long long ua = chroma_15bit(s, p, 0, cx, cw, a), ub = chroma_15bit(s, p, 0, cx, cw, b);
        long long va = chroma_15bit(s, p, 1, cx, cw, a), vb = chroma_15bit(s, p, 1, cx, cw, b);
        U = clamp_u8((int)((ua * wa + ub * (4096 - wa) + (1 << 18)) >> 19));
        V = clamp_u8((int)((va * wa + vb * (4096 - wa) + (1 << 18)) >> 19));
    } else {
        U = narrow((int)chroma_at(s, 0, x, y), p.bits);
        V = narrow((int)chroma_at(s, 1, x, y), p.bits);
    }
    Y = narrow(Y, p.bits);
    out[0] = (float)table_luma(p, Y + table_step(V, p.crv));
    out[1] = (float)table_luma(p, Y + table_step(U, p.cgu) + table_step(V, p.cgv));
    out[2] = (float)table_luma(p, Y + table_step(U, p.cbu));
}

// RGB levels of source pixel (x, y).
__device__ void rgb_at(const Surface& s, const ColorParams& p, int x, int y, float out[3]) {
    if (p.mode != 0) {
        rgb_swscale(s, p, x, y, out);
        return;
    }
    float Y = sample(s.luma + (long long)y * s.pitch, x, s.wide, s.shift);
    float cb = chroma_upsampled(s, 0, x, y);
    float cr = chroma_upsampled(s, 1, x, y);
    if (p.identity) {
        out[0] = level(__fmul_rn(__fsub_rn(cr, p.y_offset), p.y_scale));
        out[1] = level(__fmul_rn(__fsub_rn(Y, p.y_offset), p.y_scale));
        out[2] = level(__fmul_rn(__fsub_rn(cb, p.y_offset), p.y_scale));
        return;
    }
    float yn = __fmul_rn(__fsub_rn(Y, p.y_offset), p.y_scale);
    float cbn = __fmul_rn(__fsub_rn(cb, p.c_offset), p.c_scale);
    float crn = __fmul_rn(__fsub_rn(cr, p.c_offset), p.c_scale);
    out[0] = level(__fadd_rn(yn, __fmul_rn(p.cr_r, crn)));
    out[1] = level(__fsub_rn(__fsub_rn(yn, __fmul_rn(p.cb_g, cbn)), __fmul_rn(p.cr_g, crn)));
    out[2] = level(__fadd_rn(yn, __fmul_rn(p.cb_b, cbn)));
}

// Source pixel shown at display position (x, y) after a clockwise turn (0..3 quarters).
__device__ __forceinline__ void source_of(int rotation, int x, int y, int w, int h, int* sx, int* sy) {
    switch (rotation) {
        case 1: *sx = y; *sy = h - 1 - x; break;
        case 2: *sx = w - 1 - x; *sy = h - 1 - y; break;
        case 3: *sx = w - 1 - y; *sy = x; break;
        default: *sx = x; *sy = y; break;
    }
}

// acc = v0*w0; then the first 4*floor((n-1)/4) steps unfused, the rest fused (torch's x86 build).
__device__ __forceinline__ float accumulate(float acc, float v, float w, int j, int plain) {
    return (j - 1 < plain) ? __fadd_rn(acc, __fmul_rn(v, w)) : fmaf(v, w, acc);
}

// torch's uint8 kernel: the rounded, clamped 8-bit result of an integer accumulation.
__device__ __forceinline__ float int_result(int acc, int precision) {
    return (float)clamp_u8(acc >> precision);
}

extern "C" __global__ void convert_resize_h(
    Surface s, ColorParams p, int rotation, int disp_w, int disp_h,
    const int* __restrict__ tap_start, const int* __restrict__ tap_count,
    const float* __restrict__ tap_weight, const int* __restrict__ tap_iweight,
    int max_taps, int precision, int out_w,
    float* __restrict__ tmp)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= out_w || y >= disp_h) return;
    int start = tap_start[x], n = tap_count[x];
    int plain = 4 * ((n - 1) / 4);
    const float* w = tap_weight + (long long)x * max_taps;
    const int* iw = tap_iweight + (long long)x * max_taps;
    float acc[3] = {0.0f, 0.0f, 0.0f};
    int iacc[3];
    for (int c = 0; c < 3; ++c) iacc[c] = precision > 0 ? 1 << (precision - 1) : 0;
    for (int j = 0; j < n; ++j) {
        int sx, sy;
        source_of(rotation, start + j, y, s.width, s.height, &sx, &sy);
        float rgb[3];
        rgb_at(s, p, sx, sy, rgb);
        for (int c = 0; c < 3; ++c) {
            if (precision > 0) {
                iacc[c] += (int)rgb[c] * iw[j];
            } else {
                acc[c] = (j == 0) ? __fmul_rn(rgb[c], w[j]) : accumulate(acc[c], rgb[c], w[j], j, plain);
            }
        }
    }
    long long plane = (long long)disp_h * out_w;
    for (int c = 0; c < 3; ++c) {
        tmp[c * plane + (long long)y * out_w + x] = precision > 0 ? int_result(iacc[c], precision) : acc[c];
    }
}

__device__ __forceinline__ unsigned short to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even (inputs are finite)
    return (unsigned short)(u >> 16);
}

extern "C" __global__ void resize_v_patchify(
    const float* __restrict__ tmp, int tmp_h, int out_w, int out_h,
    const int* __restrict__ tap_start, const int* __restrict__ tap_count,
    const float* __restrict__ tap_weight, const int* __restrict__ tap_iweight,
    int max_taps, int precision, int resize,
    float m0, float m1, float m2, float s0, float s1, float s2,
    int slot, int grid_h, int grid_w, int P, int M, int T, int bf16, void* __restrict__ out)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= out_w || y >= out_h) return;
    const float mean[3] = {m0, m1, m2};
    const float stdv[3] = {s0, s1, s2};
    const int DIM = 3 * T * P * P;
    int tt = slot / T, tp = slot % T;
    int gy = y / P, py = y % P, gx = x / P, px = x % P;
    int bh = gy / M, ih = gy % M, bw = gx / M, iw = gx % M;
    long long row = (long long)tt * grid_h * grid_w + ((long long)(bh * (grid_w / M) + bw) * M + ih) * M + iw;
    long long base = row * DIM + (tp * P + py) * P + px;
    long long plane = (long long)tmp_h * out_w;
    for (int c = 0; c < 3; ++c) {
        const float* src = tmp + c * plane;
        float acc;
        if (resize && precision > 0) {
            // The horizontal pass left 8-bit levels (exact in float).
            int start = tap_start[y], n = tap_count[y];
            const int* w = tap_iweight + (long long)y * max_taps;
            int iacc = 1 << (precision - 1);
            for (int j = 0; j < n; ++j) {
                iacc += (int)src[(long long)(start + j) * out_w + x] * w[j];
            }
            acc = int_result(iacc, precision);
        } else if (resize) {
            int start = tap_start[y], n = tap_count[y];
            int plain = 4 * ((n - 1) / 4);
            const float* w = tap_weight + (long long)y * max_taps;
            acc = __fmul_rn(src[(long long)start * out_w + x], w[0]);
            for (int j = 1; j < n; ++j) {
                acc = accumulate(acc, src[(long long)(start + j) * out_w + x], w[j], j, plain);
            }
        } else {
            acc = src[(long long)y * out_w + x];
        }
        float v = rintf(acc < 0.0f ? 0.0f : (acc > 255.0f ? 255.0f : acc));
        float norm = __fdiv_rn(__fsub_rn(v, mean[c]), stdv[c]);
        long long i = base + (long long)c * T * P * P;
        if (bf16) {
            reinterpret_cast<unsigned short*>(out)[i] = to_bf16(norm);
        } else {
            reinterpret_cast<float*>(out)[i] = norm;
        }
    }
}
