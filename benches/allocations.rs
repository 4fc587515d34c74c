//! Heap allocations per send, counted by a global allocator that wraps the system's:
//! one `POST /v1/messages` with the SES transport (`aws-sdk-sesv2` over an HTTP
//! client that answers in-process), through the router, and through the whole
//! server on a loopback keep-alive connection (hyper's buffers included). The client
//! side allocates nothing while counting: requests are built before, or written as
//! raw bytes into the socket and read into a fixed buffer.
//!
//!   cargo bench --bench allocations

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tower::ServiceExt;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static REALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REALLOCATIONS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size.saturating_sub(layout.size()) as u64, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Counts since the last snapshot.
#[derive(Clone, Copy)]
struct Counts {
    allocations: u64,
    reallocations: u64,
    bytes: u64,
}

fn snapshot() -> Counts {
    Counts {
        allocations: ALLOCATIONS.load(Relaxed),
        reallocations: REALLOCATIONS.load(Relaxed),
        bytes: BYTES.load(Relaxed),
    }
}

fn per_send(name: &str, before: Counts, after: Counts, sends: u64) {
    let each = |a: u64, b: u64| (b - a) as f64 / sends as f64;
    println!(
        "{name:<58} {:>8.1} {:>8.1} {:>10.0}",
        each(before.allocations, after.allocations),
        each(before.reallocations, after.reallocations),
        each(before.bytes, after.bytes),
    );
}

const WARM_UP: usize = 200;
const SENDS: usize = 2_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Through the router, without a socket: what the service itself allocates.
fn through_router(ses: bool, name: &str) {
    let runtime = runtime();
    let router = runtime.block_on(support::router(ses));
    let body = support::send_body();
    let run = |count: usize| {
        let requests: Vec<_> = (0..count).map(|_| support::send_request(&body)).collect();
        let before = snapshot();
        runtime.block_on(async {
            for request in requests {
                let response = router.clone().oneshot(request).await.unwrap();
                assert_eq!(response.status(), 200);
                drop(response);
            }
        });
        snapshot_since(before)
    };
    run(WARM_UP);
    let (before, after) = run(SENDS);
    per_send(name, before, after, SENDS as u64);
}

fn snapshot_since(before: Counts) -> (Counts, Counts) {
    (before, snapshot())
}

/// Through the whole server on one keep-alive loopback connection: the service plus
/// hyper's connection handling.
fn through_server(name: &str) {
    let runtime = runtime();
    let app = runtime.block_on(support::application(true));
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let body = support::send_body();
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\n\r\n{body}",
        support::TOKEN,
        body.len()
    );
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket.set_nodelay(true).unwrap();
    let mut buffer = [0u8; 4096];
    // The answers all have one length (same message id, same date format).
    socket.write_all(request.as_bytes()).unwrap();
    let length = read_response(&mut socket, &mut buffer, None);
    assert!(
        buffer.starts_with(b"HTTP/1.1 200"),
        "the send was not answered 200"
    );
    let mut run = |count: usize| {
        let before = snapshot();
        for _ in 0..count {
            socket.write_all(request.as_bytes()).unwrap();
            read_response(&mut socket, &mut buffer, Some(length));
        }
        snapshot_since(before)
    };
    run(WARM_UP);
    let (before, after) = run(SENDS);
    per_send(name, before, after, SENDS as u64);
    assert!(
        buffer.starts_with(b"HTTP/1.1 200"),
        "a send was not answered 200"
    );
    drop(socket);
    let _ = stop.send(());
    runtime.block_on(server).unwrap().unwrap();
}

/// Read one answer: its known length, or (the first time) up to the end of its body.
fn read_response(
    socket: &mut std::net::TcpStream,
    buffer: &mut [u8],
    length: Option<usize>,
) -> usize {
    let mut read = 0;
    loop {
        read += socket.read(&mut buffer[read..]).unwrap();
        let complete = match length {
            Some(length) => read >= length,
            None => body_complete(&buffer[..read]),
        };
        if complete {
            return read;
        }
    }
}

fn body_complete(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length: usize = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("answers carry a content-length");
    body.len() >= length
}

fn main() {
    println!(
        "{:<58} {:>8} {:>8} {:>10}",
        "per send", "allocs", "reallocs", "bytes"
    );
    through_router(false, "POST /v1/messages, router, no-op mailer");
    through_router(
        true,
        "POST /v1/messages, router, SES transport (in-process HTTP)",
    );
    through_server("POST /v1/messages, server on loopback, SES transport");
}
