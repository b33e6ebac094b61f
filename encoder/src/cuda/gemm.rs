//! Row-major linear layers, `Y[rows, out] = X[rows, in] · W[out, in]ᵀ (+ b)`, through
//! cuBLASLt: f32 (exact FP32 compute) or bf16 (fp32 accumulation), the bias added in
//! the epilogue before rounding to the output type (as torch's addmm does). Descriptors,
//! layouts and the heuristic's algorithm are cached per shape.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::cublaslt::{result, sys};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

use crate::error::{Error, Result};

/// Element type of a GEMM's operands and result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Elem {
    F32,
    Bf16,
}

impl Elem {
    fn cuda(self) -> sys::cudaDataType {
        match self {
            Elem::F32 => sys::cudaDataType_t::CUDA_R_32F,
            Elem::Bf16 => sys::cudaDataType_t::CUDA_R_16BF,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Shape {
    rows: u64,
    inp: u64,
    out: u64,
    bias: bool,
    gelu: bool,
    elem: Elem,
}

/// A prepared GEMM: descriptor, layouts and algorithm for one shape.
struct GemmPlan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    c: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Drop for GemmPlan {
    fn drop(&mut self) {
        // SAFETY: each handle was created once by `prepare`, is owned by this value alone
        // and is destroyed once, here; no launch that uses it is still being enqueued
        // (launches hold the cache lock and `&self`).
        unsafe {
            result::destroy_matrix_layout(self.a).ok();
            result::destroy_matrix_layout(self.b).ok();
            result::destroy_matrix_layout(self.c).ok();
            result::destroy_matmul_desc(self.desc).ok();
        }
    }
}

const WORKSPACE: usize = 32 << 20;

fn blas(e: cudarc::cublaslt::result::CublasError) -> Error {
    Error::Cuda(format!("cuBLASLt: {e:?}"))
}

/// Device addresses and sizes of one linear layer's parameters: `w` is `out × inp`,
/// `bias` has `out` elements.
pub(crate) struct Layer {
    pub w: u64,
    pub bias: Option<u64>,
    pub inp: usize,
    pub out: usize,
    /// Applies cuBLASLt's GELU (tanh form) to `x·wᵀ + bias` in the epilogue, on the f32
    /// accumulator (needs a bias).
    pub gelu: bool,
}

/// cuBLASLt on one stream.
pub(crate) struct Gemm {
    handle: sys::cublasLtHandle_t,
    stream: Arc<CudaStream>,
    workspace: CudaSlice<u8>,
    cache: Mutex<HashMap<Shape, GemmPlan>>,
}

// SAFETY: the handle is used only under the cache mutex or by the tower's single forward
// at a time (CudaTower serializes forwards); cuBLASLt handles may move between threads.
unsafe impl Send for Gemm {}
// SAFETY: as above.
unsafe impl Sync for Gemm {}

impl Gemm {
    pub fn new(stream: Arc<CudaStream>) -> Result<Self> {
        let handle = result::create_handle().map_err(blas)?;
        let workspace = stream
            .alloc_zeros::<u8>(WORKSPACE)
            .map_err(|e| Error::Cuda(e.to_string()))?;
        Ok(Self {
            handle,
            stream,
            workspace,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn prepare(&self, s: Shape) -> Result<GemmPlan> {
        let set_desc = |desc, attr, value: &i32| {
            // SAFETY: `desc` was just created by `create_matmul_desc` and is live; the
            // attribute is an i32 and `value` points to one for the call's duration.
            unsafe {
                result::set_matmul_desc_attribute(desc, attr, (value as *const i32).cast(), 4)
            }
            .map_err(blas)
        };
        let desc = result::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType_t::CUDA_R_32F,
        )
        .map_err(blas)?;
        // Column-major view: C (out × rows) = op(A) · B, A = W stored [in × out] (transposed), B = X [in × rows].
        set_desc(
            desc,
            sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
            &1,
        )?;
        set_desc(
            desc,
            sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB,
            &0,
        )?;
        if s.bias {
            let epilogue = if s.gelu {
                sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU_BIAS
            } else {
                sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS
            } as i32;
            set_desc(
                desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE,
                &epilogue,
            )?;
        }
        let t = s.elem.cuda();
        let a = result::create_matrix_layout(t, s.inp, s.out, s.inp as i64).map_err(blas)?;
        let b = result::create_matrix_layout(t, s.inp, s.rows, s.inp as i64).map_err(blas)?;
        let c = result::create_matrix_layout(t, s.out, s.rows, s.out as i64).map_err(blas)?;
        let pref = result::create_matmul_pref().map_err(blas)?;
        let ws = WORKSPACE as u64;
        // SAFETY: `pref` and the descriptor and layouts were just created and are live;
        // the workspace attribute is a u64 and `ws` points to one for the call; the
        // heuristic writes one result into `heuristic`; the preference is destroyed right
        // after, once.
        let heuristic = unsafe {
            result::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&ws as *const u64).cast(),
                8,
            )
            .map_err(blas)?;
            let h = result::get_matmul_algo_heuristic(self.handle, desc, a, b, c, c, pref);
            result::destroy_matmul_pref(pref).ok();
            h.map_err(blas)?
        };
        Ok(GemmPlan {
            desc,
            a,
            b,
            c,
            algo: heuristic.algo,
        })
    }

    /// `y = x · wᵀ (+ bias)` on the stream; `x` and `y` are device addresses of
    /// `rows × layer.inp` and `rows × layer.out` elements of `elem`.
    pub fn linear(&self, elem: Elem, layer: Layer, x: u64, y: u64, rows: usize) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        let Layer {
            w,
            bias,
            inp,
            out,
            gelu,
        } = layer;
        let shape = Shape {
            rows: rows as u64,
            inp: inp as u64,
            out: out as u64,
            bias: bias.is_some(),
            gelu: gelu && bias.is_some(),
            elem,
        };
        let mut cache = self.cache.lock().expect("gemm cache lock");
        let p = match cache.entry(shape) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(self.prepare(shape)?),
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (ws, _ws_guard) = self.workspace.device_ptr(&self.stream);
        // SAFETY: cublasLtMatmul's contract. `w`, `bias`, `x` and `y` are device addresses
        // in this tower's context of at least out × inp, out, rows × inp and rows × out
        // elements of `elem`: `Layer`s come from the tower's uploaded weights and every
        // caller in this crate sizes `x` and `y` from the same `rows` (see `linear`'s
        // doc); they stay alive until the stream is synchronized, since the tower owns
        // them. The workspace is WORKSPACE bytes of this context. The bias attribute is
        // set on the cached descriptor under the cache lock, immediately before the
        // launch that reads it (cuBLASLt copies it at enqueue time), and `alpha`/`beta`
        // are host f32s read during the call.
        unsafe {
            if let Some(b) = bias {
                result::set_matmul_desc_attribute(
                    p.desc,
                    sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                    (&b as *const u64).cast(),
                    8,
                )
                .map_err(blas)?;
            }
            result::matmul(
                self.handle,
                p.desc,
                (&alpha as *const f32).cast(),
                (&beta as *const f32).cast(),
                w as *const c_void,
                p.a,
                x as *const c_void,
                p.b,
                y as *const c_void,
                p.c,
                y as *mut c_void,
                p.c,
                &p.algo,
                ws as *mut c_void,
                WORKSPACE,
                self.stream.cu_stream() as *mut _,
            )
            .map_err(blas)
        }
    }
}

impl Drop for Gemm {
    fn drop(&mut self) {
        self.cache.lock().map(|mut c| c.clear()).ok();
        // SAFETY: the handle was created in `new` and is destroyed once, here; the cached
        // plans made with it were destroyed just above.
        unsafe { result::destroy_handle(self.handle) }.ok();
    }
}
