//! A GPU memory pool exported once through CUDA IPC. Results are copied into slots of
//! it; a client opens the pool's handle once (`cudaIpcOpenMemHandle`) and reads each
//! result in place at its offset. A slot is handed out again only after its lease ends.

use std::sync::{Arc, Mutex};

use cudarc::driver::{result, sys, CudaContext, CudaStream};

/// Alignment of slots (a multiple of every dtype's size and of 256-byte transactions).
const ALIGN: u64 = 512;

/// The exported pool of one GPU.
pub struct DevicePool {
    ctx: Arc<CudaContext>,
    /// Copies into slots run here and are waited for: a device-to-device `cuMemcpy` (and
    /// one from pageable host memory) may return before the copy is done, and the source
    /// could be freed, or the client read the slot, while it is still running.
    stream: Arc<CudaStream>,
    base: sys::CUdeviceptr,
    size: u64,
    handle: [u8; 64],
    id: String,
    /// Free (offset, length) ranges, sorted by offset.
    free: Mutex<Vec<(u64, u64)>>,
}

// SAFETY: the base pointer is only used through the CUDA driver with the pool's context
// bound; the free list is behind a mutex.
unsafe impl Send for DevicePool {}
// SAFETY: as above.
unsafe impl Sync for DevicePool {}

impl DevicePool {
    /// Allocates `size` bytes with cuMemAlloc (IPC needs a cuMemAlloc base) and exports it.
    pub fn new(ctx: Arc<CudaContext>, size: u64) -> anyhow::Result<Arc<Self>> {
        ctx.bind_to_thread()?;
        // SAFETY: the context bound above is current on this thread; the pool owns the
        // allocation and frees it once, in Drop.
        let base = unsafe { result::malloc_sync(size as usize) }?;
        let mut raw = sys::CUipcMemHandle_st { reserved: [0; 64] };
        // SAFETY: `base` is a live cuMemAlloc allocation of this context.
        let exported = unsafe { sys::cuIpcGetMemHandle(&mut raw, base) }.result();
        if let Err(e) = exported {
            // SAFETY: allocated just above, not shared yet.
            unsafe { result::free_sync(base) }.ok();
            return Err(e.into());
        }
        Ok(Arc::new(Self {
            id: super::leases::new_id(),
            handle: raw.reserved.map(|c| c as u8),
            stream: ctx.new_stream()?,
            ctx,
            base,
            size,
            free: Mutex::new(vec![(0, size)]),
        }))
    }

    /// Size of the pool in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn handle(&self) -> &[u8; 64] {
        &self.handle
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    /// Bytes not in use.
    pub fn free_bytes(&self) -> u64 {
        self.free
            .lock()
            .expect("pool lock")
            .iter()
            .map(|(_, len)| len)
            .sum()
    }

    /// Takes a slot of `len` bytes (first fit), or None when the pool is full.
    pub fn alloc(self: &Arc<Self>, len: u64) -> Option<Slot> {
        let need = len.max(1).div_ceil(ALIGN) * ALIGN;
        let mut free = self.free.lock().expect("pool lock");
        let i = free.iter().position(|&(_, l)| l >= need)?;
        let (offset, l) = free[i];
        if l == need {
            free.remove(i);
        } else {
            free[i] = (offset + need, l - need);
        }
        Some(Slot {
            pool: self.clone(),
            offset,
            len: need,
        })
    }

    fn release(&self, offset: u64, len: u64) {
        let mut free = self.free.lock().expect("pool lock");
        let i = free.partition_point(|&(o, _)| o < offset);
        free.insert(i, (offset, len));
        // Merge with neighbours.
        if i + 1 < free.len() && free[i].0 + free[i].1 == free[i + 1].0 {
            free[i].1 += free[i + 1].1;
            free.remove(i + 1);
        }
        if i > 0 && free[i - 1].0 + free[i - 1].1 == free[i].0 {
            free[i - 1].1 += free[i].1;
            free.remove(i);
        }
    }

    /// Copies `len` bytes from device pointer `src` (same GPU; its writes complete) into
    /// the slot, and waits for the copy.
    pub fn fill(&self, slot: &Slot, src: sys::CUdeviceptr, len: usize) -> anyhow::Result<()> {
        anyhow::ensure!(len as u64 <= slot.len, "result larger than its slot");
        self.ctx.bind_to_thread()?;
        // SAFETY: the slot lies inside the pool allocation and holds `len`
        // bytes; `src` is a device allocation of at least `len` bytes on this GPU, alive
        // until the copy is waited for below.
        unsafe {
            result::memcpy_dtod_async(self.base + slot.offset, src, len, self.stream.cu_stream())
        }?;
        self.stream.synchronize()?;
        Ok(())
    }

    /// Copies host bytes into the slot, and waits for the copy.
    pub fn upload(&self, slot: &Slot, bytes: &[u8]) -> anyhow::Result<()> {
        anyhow::ensure!(
            bytes.len() as u64 <= slot.len,
            "result larger than its slot"
        );
        self.ctx.bind_to_thread()?;
        // SAFETY: the slot holds at least `bytes.len()` bytes; `bytes` stays
        // borrowed until the copy is waited for below.
        unsafe {
            result::memcpy_htod_async(self.base + slot.offset, bytes, self.stream.cu_stream())
        }?;
        self.stream.synchronize()?;
        Ok(())
    }
}

impl Drop for DevicePool {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: the pool owns the allocation; no slot outlives it
            // (slots hold an Arc to the pool).
            unsafe { result::free_sync(self.base) }.ok();
        }
    }
}

/// A leased part of a pool; returns to the pool when dropped.
pub struct Slot {
    pool: Arc<DevicePool>,
    pub offset: u64,
    pub len: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool.release(self.offset, self.len);
    }
}
