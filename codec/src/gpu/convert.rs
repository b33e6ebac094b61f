//! The preprocessing kernels run on each decoded picture: colour conversion with the
//! horizontal resize, then the vertical resize, normalization and patchify into the
//! picture's slots of the output tensor (through a one-slice staging buffer and a peer
//! copy when the output is on another GPU).

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};

use super::peer::SliceCopy;
use super::{driver, Gpu, PixelDtype};
use crate::decode::nvdec::Picture;
use crate::plan::{PatchGeometry, SamplePlan};
use crate::preprocess::{ColorConverter, ColorMode, IntTapTable, Normalization, Resize, TapTable};
use crate::stream::{Range, Rotation, StreamInfo};
use crate::{Error, Result};

/// Kernel arguments mirroring `struct Surface` in kernels/preprocess.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct SurfaceArg {
    luma: u64,
    chroma: u64,
    chroma_plane_bytes: i64,
    pitch: i32,
    width: i32,
    height: i32,
    wide: i32,
    shift: i32,
    chroma420: i32,
}

/// Mirrors `struct ColorParams` in kernels/preprocess.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ColorArg {
    constants: [f32; 8],
    identity: i32,
    /// 0: accurate (the floats); 1: swscale's unscaled converter (8-bit 4:2:0);
    /// 2: swscale's tables (wider 4:2:0 with vertical chroma interpolation, 4:4:4).
    mode: i32,
    bits: i32,
    /// Chroma sited on the left luma column (moved to the centre in mode 2).
    left_sited: i32,
    /// y_coeff, vr, ub, ug, vg, y_offset, cy, oy, base, crv, cbu, cgu, cgv.
    swscale: [i32; 13],
}

// SAFETY: both are #[repr(C)], Copy, plain integers and floats with no padding-dependent
// invariants, laid out exactly like the CUDA structs they are passed by value as (sizes
// asserted below), so their bytes are a valid kernel argument.
unsafe impl DeviceRepr for SurfaceArg {}
// SAFETY: as for SurfaceArg above.
unsafe impl DeviceRepr for ColorArg {}
const _: () =
    assert!(std::mem::size_of::<SurfaceArg>() == 48 && std::mem::size_of::<ColorArg>() == 100);

/// Tap tables in device memory: float weights, or the int16 weights (held as i32) of
/// torch's uint8 kernel when `precision` > 0. The other array is a one-value
/// placeholder.
struct DeviceTaps {
    starts: CudaSlice<i32>,
    counts: CudaSlice<i32>,
    weights: CudaSlice<f32>,
    int_weights: CudaSlice<i32>,
    max_taps: i32,
    precision: i32,
}

impl DeviceTaps {
    fn upload(stream: &Arc<CudaStream>, t: &TapTable) -> Result<Self> {
        Ok(Self {
            starts: stream.clone_htod(&t.starts).map_err(driver)?,
            counts: stream.clone_htod(&t.counts).map_err(driver)?,
            weights: stream.clone_htod(&t.weights).map_err(driver)?,
            int_weights: stream.clone_htod(&[0i32]).map_err(driver)?,
            max_taps: t.max_taps as i32,
            precision: 0,
        })
    }

    fn upload_int(stream: &Arc<CudaStream>, t: &IntTapTable) -> Result<Self> {
        Ok(Self {
            starts: stream.clone_htod(&t.starts).map_err(driver)?,
            counts: stream.clone_htod(&t.counts).map_err(driver)?,
            weights: stream.clone_htod(&[0f32]).map_err(driver)?,
            int_weights: stream.clone_htod(&t.weights).map_err(driver)?,
            max_taps: t.max_taps as i32,
            precision: t.precision as i32,
        })
    }

    /// The taps resizing `in_size` to `out_size` with `resize`'s arithmetic. An
    /// unchanged size is one tap of weight 1.0 (exact in both: the passes torch skips).
    fn new(
        stream: &Arc<CudaStream>,
        resize: Resize,
        in_size: usize,
        out_size: usize,
    ) -> Result<Self> {
        match resize {
            Resize::BicubicUint8 if in_size != out_size => {
                Self::upload_int(stream, &IntTapTable::new(in_size, out_size))
            }
            _ => Self::upload(stream, &TapTable::new(in_size, out_size)),
        }
    }
}

/// The two preprocessing kernels of one worker, with its stream, tables and scratch
/// buffer.
pub(super) struct FrameKernels<'a> {
    gpu: &'a Gpu,
    stream: Arc<CudaStream>,
    info: &'a StreamInfo,
    display: (usize, usize),
    out_size: (usize, usize),
    grid: [usize; 3],
    geometry: PatchGeometry,
    normalization: Normalization,
    dtype: PixelDtype,
    h_taps: DeviceTaps,
    v_taps: DeviceTaps,
    vertical_resize: bool,
    tmp: CudaSlice<f32>,
    /// How YUV becomes RGB (the plan's).
    color: ColorMode,
    /// One temporal slice, for frames whose slots are on another GPU: written here, then
    /// copied over (made on the first such frame).
    staging: Option<CudaSlice<u8>>,
    slice_rows: usize,
}

/// Where one frame goes: slot `slot` of the pixel-values buffer at `ptr` on `gpu`.
pub(super) struct Target<'g> {
    pub gpu: &'g Gpu,
    pub ptr: u64,
    pub slot: usize,
}

impl<'a> FrameKernels<'a> {
    /// Kernels on `gpu` (bound to this thread, with a new stream) writing pixel values
    /// of `dtype`.
    pub(super) fn new(
        gpu: &'a Gpu,
        info: &'a StreamInfo,
        plan: &SamplePlan,
        dtype: PixelDtype,
    ) -> Result<Self> {
        gpu.ctx.bind_to_thread().map_err(driver)?;
        let stream = gpu.ctx.new_stream().map_err(driver)?;
        let (dh, dw) = info.display_size();
        let (dh, dw) = (dh as usize, dw as usize);
        let (oh, ow) = (plan.resized_height as usize, plan.resized_width as usize);
        Ok(Self {
            gpu,
            info,
            display: (dh, dw),
            out_size: (oh, ow),
            grid: plan.grid_thw,
            geometry: plan.geometry,
            normalization: plan.normalization,
            dtype,
            h_taps: DeviceTaps::new(&stream, plan.resize, dw, ow)?,
            v_taps: DeviceTaps::new(&stream, plan.resize, dh, oh)?,
            vertical_resize: dh != oh,
            tmp: stream.alloc_zeros(3 * dh * ow).map_err(driver)?,
            color: plan.color,
            staging: None,
            slice_rows: plan.grid_thw[1] * plan.grid_thw[2],
            stream,
        })
    }

    /// The stream the kernels (and the decoder's mapping) run on.
    pub(super) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Converts, resizes and patchifies one mapped picture into its `targets`, then waits
    /// for the kernels (and copies) so the surface can be unmapped.
    pub(super) fn write(&mut self, p: &Picture, targets: &[Target<'_>]) -> Result<()> {
        self.convert(p)?;
        for target in targets {
            if std::ptr::eq(target.gpu, self.gpu) {
                self.patchify(target.ptr, target.slot)?;
                continue;
            }
            let staging = match &self.staging {
                Some(s) => s,
                None => self.staging.insert(
                    self.stream
                        .alloc_zeros(
                            self.slice_rows * self.geometry.patch_dim() * self.dtype.size(),
                        )
                        .map_err(driver)?,
                ),
            };
            let staging = staging.device_ptr(&self.stream).0;
            let tps = self.geometry.temporal_patch_size;
            let (slice, half) = (target.slot / tps, target.slot % tps);
            self.patchify(staging, half)?;
            let _span = tracing::info_span!("peer_copy", slot = target.slot).entered();
            SliceCopy::new(
                &self.gpu.ctx,
                &target.gpu.ctx,
                self.slice_rows,
                self.dtype.size(),
                self.geometry,
            )
            .frame(&self.stream, staging, target.ptr, slice, half)?;
        }
        self.stream.synchronize().map_err(driver)
    }

    /// Pass 1: converts the mapped picture to RGB and resizes it horizontally into `tmp`.
    fn convert(&mut self, p: &Picture) -> Result<()> {
        let (dh, dw) = self.display;
        let (_, ow) = self.out_size;
        let rotation = match self.info.rotation {
            Rotation::None => 0i32,
            Rotation::Cw90 => 1,
            Rotation::Cw180 => 2,
            Rotation::Cw270 => 3,
        };
        let (pw, ph) = if self.info.rotation.is_transposed() {
            (dh, dw)
        } else {
            (dw, dh)
        };
        if (p.width as usize, p.height as usize) != (pw, ph) {
            return Err(Error::Unsupported(format!(
                "decoded pictures are {}x{}, the stream says {pw}x{ph} (resolution changes are not supported)",
                p.width, p.height
            )));
        }
        let surface = SurfaceArg {
            luma: p.devptr,
            chroma: p.devptr + p.chroma_offset(),
            chroma_plane_bytes: (u64::from(p.pitch) * u64::from(p.height)) as i64,
            pitch: p.pitch as i32,
            width: p.width as i32,
            height: p.height as i32,
            wide: i32::from(p.format.is_wide()),
            shift: if p.format.is_wide() {
                16 - i32::from(p.bit_depth)
            } else {
                0
            },
            chroma420: i32::from(p.format.is_420()),
        };
        let range = self.info.color.full_range.map_or(Range::Limited, |f| {
            if f {
                Range::Full
            } else {
                Range::Limited
            }
        });
        let converter = ColorConverter::new(
            self.info.color.conversion_matrix(),
            range,
            p.bit_depth,
            self.color,
        )
        .left_sited(self.info.chroma_left_sited());
        let identity = self.info.color.conversion_matrix() == crate::stream::Matrix::Identity;
        let color = match converter.swscale() {
            Some(sws) => ColorArg {
                constants: converter.constants(),
                identity: i32::from(identity),
                mode: if p.bit_depth == 8 && p.format.is_420() {
                    1
                } else {
                    2
                },
                bits: i32::from(p.bit_depth),
                left_sited: i32::from(converter.is_left_sited()),
                swscale: [
                    sws.y_coeff,
                    sws.vr,
                    sws.ub,
                    sws.ug,
                    sws.vg,
                    sws.y_offset,
                    sws.cy,
                    sws.oy,
                    sws.base,
                    sws.crv,
                    sws.cbu,
                    sws.cgu,
                    sws.cgv,
                ],
            },
            None => ColorArg {
                constants: converter.constants(),
                identity: i32::from(identity),
                mode: 0,
                bits: i32::from(p.bit_depth),
                left_sited: 0,
                swscale: [0; 13],
            },
        };
        let (disp_w, disp_h, out_w) = (dw as i32, dh as i32, ow as i32);
        let mut pass1 = self.stream.launch_builder(&self.gpu.convert_h);
        pass1
            .arg(&surface)
            .arg(&color)
            .arg(&rotation)
            .arg(&disp_w)
            .arg(&disp_h)
            .arg(&self.h_taps.starts)
            .arg(&self.h_taps.counts)
            .arg(&self.h_taps.weights)
            .arg(&self.h_taps.int_weights)
            .arg(&self.h_taps.max_taps)
            .arg(&self.h_taps.precision)
            .arg(&out_w)
            .arg(&mut self.tmp);
        // SAFETY: kernel-launch contract: the arguments match convert_resize_h's
        // signature in kernels/preprocess.cu, in order and type; the kernel was loaded in
        // this GPU's context, which the stream belongs to. The surface (checked above to
        // be the stream's size) stays mapped until `write` synchronizes the stream, the
        // tap tables live in `self`, and `tmp` holds the 3 × display_h × out_w floats
        // the grid writes. With precision > 0 the kernel reads the int weights instead of
        // the float ones; both arrays hold max_taps values per output column of the
        // table in use.
        unsafe {
            pass1.launch(LaunchConfig {
                grid_dim: grid_for(ow, dh),
                block_dim: BLOCK,
                shared_mem_bytes: 0,
            })
        }
        .map(drop)
        .map_err(driver)
    }

    /// Pass 2: resizes `tmp` vertically, normalizes and patchifies it into `slot` of the
    /// pixel-values buffer at `out`.
    fn patchify(&self, out: u64, slot: usize) -> Result<()> {
        let (dh, _) = self.display;
        let (oh, ow) = self.out_size;
        let (disp_h, out_w, out_h) = (dh as i32, ow as i32, oh as i32);
        let norm = self.normalization;
        let (grid_h, grid_w) = (self.grid[1] as i32, self.grid[2] as i32);
        let (patch, merge, temporal) = (
            self.geometry.patch_size as i32,
            self.geometry.merge_size as i32,
            self.geometry.temporal_patch_size as i32,
        );
        let (resize, bf16) = (
            i32::from(self.vertical_resize),
            i32::from(self.dtype == PixelDtype::Bf16),
        );
        let slot = slot as i32;
        let mut pass2 = self.stream.launch_builder(&self.gpu.resize_v);
        pass2
            .arg(&self.tmp)
            .arg(&disp_h)
            .arg(&out_w)
            .arg(&out_h)
            .arg(&self.v_taps.starts)
            .arg(&self.v_taps.counts)
            .arg(&self.v_taps.weights)
            .arg(&self.v_taps.int_weights)
            .arg(&self.v_taps.max_taps)
            .arg(&self.v_taps.precision)
            .arg(&resize)
            .arg(&norm.mean255[0])
            .arg(&norm.mean255[1])
            .arg(&norm.mean255[2])
            .arg(&norm.std255[0])
            .arg(&norm.std255[1])
            .arg(&norm.std255[2])
            .arg(&slot)
            .arg(&grid_h)
            .arg(&grid_w)
            .arg(&patch)
            .arg(&merge)
            .arg(&temporal)
            .arg(&bf16)
            .arg(&out);
        // SAFETY: kernel-launch contract: the arguments match resize_v_patchify's
        // signature in kernels/preprocess.cu, in order and type; the kernel and `tmp`
        // belong to this GPU's context. `out` is a buffer of this GPU: the job's output
        // part (sized for its slices, alive until every worker has joined) or this
        // worker's one-slice staging buffer (slot below the temporal patch size), and the
        // grid writes only the values of slot `slot` (the patch geometry is the plan's,
        // which sized the buffer), which no other launch writes.
        unsafe {
            pass2.launch(LaunchConfig {
                grid_dim: grid_for(ow, oh),
                block_dim: BLOCK,
                shared_mem_bytes: 0,
            })
        }
        .map(drop)
        .map_err(driver)
    }
}

/// Thread block of both kernels.
const BLOCK: (u32, u32, u32) = (32, 8, 1);

/// Blocks covering a `w` × `h` image.
fn grid_for(w: usize, h: usize) -> (u32, u32, u32) {
    (
        (w as u32).div_ceil(BLOCK.0),
        (h as u32).div_ceil(BLOCK.1),
        1,
    )
}
