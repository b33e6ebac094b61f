// Qwen2.5-VL preprocessing of one decoded frame, in two passes that reproduce the CPU
// reference (codec/src/preprocess) operation for operation. Compiled with --fmad=false:
// every fused multiply-add below is an explicit fmaf, exactly where the CPU path uses
// f32::mul_add; everything else rounds after each operation, as on the CPU.
//
// Pass 1 (convert_resize_h): YUV (NV12/P016 or planar 4:4:4) -> RGB levels (8-bit values
//   held as float) in display orientation, then the horizontal bicubic-antialias pass,
//   into tmp[3][display_h][out_w].
// Pass 2 (resize_v_patchify): vertical pass, clamp + round to 8-bit, normalize, and
//   scatter into the [t*h*w, 1176] patch layout (float32 or bfloat16).

struct ColorParams {
    float y_offset, y_scale, c_offset, c_scale;
    float cr_r, cb_g, cr_g, cb_b;
    int identity;  // GBR stored in YUV planes
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

// RGB levels of source pixel (x, y).
__device__ void rgb_at(const Surface& s, const ColorParams& p, int x, int y, float out[3]) {
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

extern "C" __global__ void convert_resize_h(
    Surface s, ColorParams p, int rotation, int disp_w, int disp_h,
    const int* __restrict__ tap_start, const int* __restrict__ tap_count,
    const float* __restrict__ tap_weight, int max_taps, int out_w,
    float* __restrict__ tmp)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= out_w || y >= disp_h) return;
    int start = tap_start[x], n = tap_count[x];
    int plain = 4 * ((n - 1) / 4);
    const float* w = tap_weight + (long long)x * max_taps;
    float acc[3] = {0.0f, 0.0f, 0.0f};
    for (int j = 0; j < n; ++j) {
        int sx, sy;
        source_of(rotation, start + j, y, s.width, s.height, &sx, &sy);
        float rgb[3];
        rgb_at(s, p, sx, sy, rgb);
        for (int c = 0; c < 3; ++c) {
            acc[c] = (j == 0) ? __fmul_rn(rgb[c], w[j]) : accumulate(acc[c], rgb[c], w[j], j, plain);
        }
    }
    long long plane = (long long)disp_h * out_w;
    for (int c = 0; c < 3; ++c) {
        tmp[c * plane + (long long)y * out_w + x] = acc[c];
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
    const float* __restrict__ tap_weight, int max_taps, int resize,
    float m0, float m1, float m2, float s0, float s1, float s2,
    int slot, int grid_h, int grid_w, int bf16, void* __restrict__ out)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= out_w || y >= out_h) return;
    const float mean[3] = {m0, m1, m2};
    const float stdv[3] = {s0, s1, s2};
    const int P = 14, M = 2, T = 2, DIM = 3 * T * P * P;
    int tt = slot / T, tp = slot % T;
    int gy = y / P, py = y % P, gx = x / P, px = x % P;
    int bh = gy / M, ih = gy % M, bw = gx / M, iw = gx % M;
    long long row = (long long)tt * grid_h * grid_w + ((long long)(bh * (grid_w / M) + bw) * M + ih) * M + iw;
    long long base = row * DIM + (tp * P + py) * P + px;
    long long plane = (long long)tmp_h * out_w;
    for (int c = 0; c < 3; ++c) {
        const float* src = tmp + c * plane;
        float acc;
        if (resize) {
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
