//! libnvcuvid, loaded at run time: reel builds and runs without it, and uses NVDEC
//! where the driver provides it.

use std::sync::OnceLock;

use super::ffi;

/// The NVDEC entry points reel uses.
pub(crate) struct Nvcuvid {
    // Keeps the library mapped while the function pointers are in use.
    _lib: libloading::Library,
    pub get_decoder_caps: unsafe extern "C" fn(*mut ffi::CUVIDDECODECAPS) -> ffi::CUresult,
    pub create_decoder: unsafe extern "C" fn(
        *mut ffi::CUvideodecoder,
        *mut ffi::CUVIDDECODECREATEINFO,
    ) -> ffi::CUresult,
    pub destroy_decoder: unsafe extern "C" fn(ffi::CUvideodecoder) -> ffi::CUresult,
    pub decode_picture:
        unsafe extern "C" fn(ffi::CUvideodecoder, *mut ffi::CUVIDPICPARAMS) -> ffi::CUresult,
    pub get_decode_status: unsafe extern "C" fn(
        ffi::CUvideodecoder,
        i32,
        *mut ffi::CUVIDGETDECODESTATUS,
    ) -> ffi::CUresult,
    pub map_video_frame: unsafe extern "C" fn(
        ffi::CUvideodecoder,
        i32,
        *mut u64,
        *mut u32,
        *mut ffi::CUVIDPROCPARAMS,
    ) -> ffi::CUresult,
    pub unmap_video_frame: unsafe extern "C" fn(ffi::CUvideodecoder, u64) -> ffi::CUresult,
    pub create_video_parser:
        unsafe extern "C" fn(*mut ffi::CUvideoparser, *mut ffi::CUVIDPARSERPARAMS) -> ffi::CUresult,
    pub parse_video_data:
        unsafe extern "C" fn(ffi::CUvideoparser, *mut ffi::CUVIDSOURCEDATAPACKET) -> ffi::CUresult,
    pub destroy_video_parser: unsafe extern "C" fn(ffi::CUvideoparser) -> ffi::CUresult,
}

const LIBRARY_NAMES: &[&str] = &["libnvcuvid.so.1", "libnvcuvid.so"];

impl Nvcuvid {
    fn load() -> Result<Self, String> {
        let mut last_error = String::new();
        for &name in LIBRARY_NAMES {
            // SAFETY: loading libnvcuvid runs only the NVIDIA driver library's own
            // initializers, which have no preconditions on the caller.
            match unsafe { libloading::Library::new(name) } {
                Ok(lib) => return Self::resolve(lib),
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(format!("libnvcuvid not found ({last_error})"))
    }

    fn resolve(lib: libloading::Library) -> Result<Self, String> {
        macro_rules! symbol {
            ($name:literal) => {
                // SAFETY: the symbol is declared in cuviddec.h/nvcuvid.h with exactly the
                // signature of the field it is stored in, and the library stays loaded as
                // long as the table (it is kept in `_lib`).
                *unsafe { lib.get($name) }.map_err(|e| {
                    format!(
                        "libnvcuvid lacks {}: {e}",
                        String::from_utf8_lossy(&$name[..$name.len() - 1])
                    )
                })?
            };
        }
        Ok(Self {
            get_decoder_caps: symbol!(b"cuvidGetDecoderCaps\0"),
            create_decoder: symbol!(b"cuvidCreateDecoder\0"),
            destroy_decoder: symbol!(b"cuvidDestroyDecoder\0"),
            decode_picture: symbol!(b"cuvidDecodePicture\0"),
            get_decode_status: symbol!(b"cuvidGetDecodeStatus\0"),
            map_video_frame: symbol!(b"cuvidMapVideoFrame64\0"),
            unmap_video_frame: symbol!(b"cuvidUnmapVideoFrame64\0"),
            create_video_parser: symbol!(b"cuvidCreateVideoParser\0"),
            parse_video_data: symbol!(b"cuvidParseVideoData\0"),
            destroy_video_parser: symbol!(b"cuvidDestroyVideoParser\0"),
            _lib: lib,
        })
    }
}

/// The loaded library, or why it could not be loaded.
pub(crate) fn nvcuvid() -> Result<&'static Nvcuvid, &'static str> {
    static LIB: OnceLock<Result<Nvcuvid, String>> = OnceLock::new();
    LIB.get_or_init(Nvcuvid::load)
        .as_ref()
        .map_err(String::as_str)
}

/// cuda.h's CUDA_ERROR_OUT_OF_MEMORY (the generated bindings carry only the codes the
/// NVDEC headers name).
const CUDA_ERROR_OUT_OF_MEMORY: ffi::CUresult = ffi::cudaError_enum(2);

/// Turns a failed CUresult of a call that allocates (decoder creation) into an error:
/// out of device memory, else what `otherwise` makes of the message.
pub(crate) fn check_alloc(
    result: ffi::CUresult,
    call: &str,
    otherwise: fn(String) -> crate::Error,
) -> crate::Result<()> {
    check(result, call).map_err(|message| {
        if result == CUDA_ERROR_OUT_OF_MEMORY {
            crate::Error::OutOfMemory(message)
        } else {
            otherwise(message)
        }
    })
}

/// Turns a CUresult into an error message naming the call.
pub(crate) fn check(result: ffi::CUresult, call: &str) -> Result<(), String> {
    if result == ffi::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(format!("{call} failed with CUresult {}", result.0))
    }
}
