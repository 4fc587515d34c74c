//! The connection layer: a cap on open connections (each costs buffers and a task,
//! so a burst of callers waits in the kernel's accept queue instead of growing
//! memory), a deadline on request heads (idle and slow connections give their slot
//! back), and a graceful stop.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// hyper's cap on a request's headers, its default: above the service's own
/// ([`super::MAX_HEADERS`]), so hyper's bodiless 431 is only the last resort. Left
/// unset, since setting it moves hyper's header parsing from the stack to the heap.
pub const HYPER_MAX_HEADERS: usize = 100;
/// hyper's read buffer, which bounds a request head: above the service's
/// [`super::MAX_HEADER_BYTES`], and well below hyper's default (about 400 KiB), since
/// every open connection may fill it.
pub const HYPER_MAX_BUF_SIZE: usize = 64 * 1024;

/// Serve `app` over HTTP/1.1 on `listener` until `stop` completes; then accept no
/// more connections, let each open one finish the request it is on, and return once
/// all are closed. A connection that sends no complete request head within
/// `idle_timeout` — idle between requests, or slow to send one — is closed.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    idle_timeout: Duration,
    stop: impl Future<Output = ()>,
) where
    L: Listener,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .max_buf_size(HYPER_MAX_BUF_SIZE);
    // Each connection holds a receiver; `stopping` tells them to finish, and the
    // sender sees every receiver gone once the last connection has closed.
    let (stopping, stop_seen) = watch::channel(false);
    let mut stop = pin!(stop);
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let connection =
            http.serve_connection(TokioIo::new(io), TowerToHyperService::new(app.clone()));
        let mut stop_seen = stop_seen.clone();
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            tokio::select! {
                // Closed by the client, the idle deadline or an error: nothing to do.
                _ = connection.as_mut() => return,
                _ = stop_seen.wait_for(|stop| *stop) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    drop(listener);
    drop(stop_seen);
    let _ = stopping.send(true);
    stopping.closed().await;
}

/// A listener that accepts at most `max` connections at once.
pub struct LimitedListener<L> {
    inner: L,
    permits: Arc<Semaphore>,
}

impl<L> LimitedListener<L> {
    pub fn new(inner: L, max: usize) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max.max(1))),
        }
    }
}

impl<L: Listener> Listener for LimitedListener<L> {
    type Io = LimitedIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so this only waits.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        let (io, addr) = self.inner.accept().await;
        (
            LimitedIo {
                io,
                _permit: permit,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection holding its slot until it is dropped.
pub struct LimitedIo<T> {
    io: T,
    _permit: OwnedSemaphorePermit,
}

impl<T: AsyncRead + Unpin> AsyncRead for LimitedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LimitedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[tokio::test]
    async fn a_connection_past_the_cap_waits_until_one_closes() {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut listener = LimitedListener::new(tcp, 1);
        let _first_client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _second_client = tokio::net::TcpStream::connect(addr).await.unwrap();

        let (first, _) = listener.accept().await;
        let mut second = Box::pin(listener.accept());
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(
            second.as_mut().poll(&mut cx).is_pending(),
            "no slot while the first is open"
        );

        drop(first);
        let (_second, _) = second.await;
    }
}
