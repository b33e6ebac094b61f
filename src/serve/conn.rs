//! Connection tracking: leases handed out on a connection are freed when it closes.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

pub use super::leases::ConnId;
use super::leases::Leases;

/// Frees the connection's leases when the connection's I/O is dropped.
struct Closer {
    id: ConnId,
    leases: Arc<Leases>,
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.leases.release_connection(self.id);
    }
}

/// An accepted socket that knows its connection id.
pub struct Tracked<T> {
    inner: T,
    _closer: Closer,
    id: ConnId,
}

impl<T> Tracked<T> {
    pub fn new(inner: T, leases: Arc<Leases>) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = ConnId(NEXT.fetch_add(1, Ordering::Relaxed));
        Self {
            inner,
            _closer: Closer { id, leases },
            id,
        }
    }
}

impl<T: Connected> Connected for Tracked<T> {
    type ConnectInfo = ConnId;

    fn connect_info(&self) -> ConnId {
        self.id
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
