//! Bytes of files on disk go to HTTP/1 sockets by `sendfile(2)`.
//!
//! hyper writes bodies from buffers only, so every byte of a file would be
//! copied from the page cache into the socket through user space (profiled:
//! that copy was a fifth of the server's CPU on 64 KiB ranges, and the
//! reason nginx, with `sendfile on`, served them faster). No maintained
//! crate lets hyper hand a body to `sendfile`, so this module does it in
//! the one place that sees the socket, the connection's I/O object:
//!
//! - A file body is one (or, past [`Placeholder::LEN`], several) frames
//!   that borrow a placeholder: a large read-only mapping of the zero page,
//!   which costs address space only. Before yielding a frame, the body
//!   queues a [`Job`] (file, offset, length) on its connection's [`Outbox`].
//! - hyper queues frames as they are (its vectored write strategy, which it
//!   picks because [`Conn`] says it writes vectored) and hands them to
//!   [`Conn`] as `IoSlice`s, in order, after the response head.
//! - [`Conn`] writes the slices before a placeholder slice as usual (a
//!   head before a large file with `MSG_MORE`: see [`CORK_FROM`]), and
//!   for a placeholder
//!   slice calls `sendfile` for the front job instead, at the job's offset
//!   plus how far into the slice hyper is. It checks that the slice is
//!   exactly what is left of the front job; anything else is a broken
//!   invariant and fails the connection, so placeholder zeros never reach
//!   a client.
//!
//! Only HTTP/1 responses use it (an HTTP/2 connection would copy frames
//! into its own buffers), and only for stores that hold files on this
//! machine ([`vidhost_store::ObjectStore::local_file`]).

use crate::fastpath::{Drain, Front};
use crate::state::SharedState;
use axum::body::Body;
use bytes::Bytes;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The read-only zero-page mapping that file frames borrow.
struct Placeholder {
    base: *const u8,
}

// SAFETY: the mapping is read-only and lives for the whole process.
unsafe impl Send for Placeholder {}
unsafe impl Sync for Placeholder {}

impl Placeholder {
    /// 64 GiB of address space; larger bodies take several frames.
    const LEN: usize = 1 << 36;

    fn get() -> Option<&'static Placeholder> {
        static REGION: OnceLock<Option<Placeholder>> = OnceLock::new();
        REGION
            .get_or_init(|| {
                // SAFETY: a fresh anonymous mapping; nothing else refers to it.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        Self::LEN,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                        -1,
                        0,
                    )
                };
                (p != libc::MAP_FAILED).then_some(Placeholder {
                    base: p as *const u8,
                })
            })
            .as_ref()
    }

    fn slice(&'static self, len: usize) -> Bytes {
        debug_assert!(len <= Self::LEN);
        // SAFETY: within the mapping, which is readable and never unmapped.
        Bytes::from_static(unsafe { std::slice::from_raw_parts(self.base, len) })
    }

    /// Where `buf` starts in the placeholder, if it is a slice of it.
    fn offset_of(&self, buf: &[u8]) -> Option<usize> {
        let at = (buf.as_ptr() as usize).checked_sub(self.base as usize)?;
        (at < Self::LEN && buf.len() <= Self::LEN - at).then_some(at)
    }
}

/// `len` bytes of `file` from `offset`, owed to the socket in place of a
/// placeholder frame of the same length.
struct Job {
    file: Arc<File>,
    offset: u64,
    len: u64,
    sent: u64,
}

/// The jobs of one connection, in the order hyper will write their frames.
#[derive(Clone, Default)]
pub struct Outbox(Arc<Mutex<VecDeque<Job>>>);

impl Outbox {
    fn push(&self, job: Job) {
        self.0.lock().expect("not poisoned").push_back(job);
    }
}

/// What a request knows of its connection: the outbox its file bodies go
/// through, and the peer's address.
#[derive(Clone)]
pub struct ConnInfo {
    pub outbox: Outbox,
    pub peer: std::net::SocketAddr,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>>
    for ConnInfo
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> Self {
        ConnInfo {
            outbox: stream.io().outbox.clone(),
            peer: *stream.remote_addr(),
        }
    }
}

/// The server's listener: TCP connections that can send files.
pub struct Listener {
    tcp: TcpListener,
    /// Set when objects are files here: connections then answer plain play
    /// requests themselves (see fastpath.rs).
    quick: Option<(SharedState, Arc<Drain>)>,
}

impl Listener {
    pub fn new(tcp: TcpListener, quick: Option<(SharedState, Arc<Drain>)>) -> Listener {
        Listener { tcp, quick }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Conn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Conn, std::net::SocketAddr) {
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.tcp).await;
        // Small responses go out at once (nginx does the same on keep-alive
        // connections): without it, Nagle holds the tail of a response
        // back until the previous one is acknowledged.
        let _ = tcp.set_nodelay(true);
        let conn = Conn {
            tcp: Some(tcp),
            closed_here: false,
            outbox: Outbox::default(),
            front: self
                .quick
                .as_ref()
                .map(|(s, d)| Box::new(Front::new(s.clone(), d.clone()))),
        };
        (conn, addr)
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp.local_addr()
    }
}

/// A body of `len` bytes of `file` from `offset`, sent by `sendfile` on the
/// connection `outbox` belongs to; `counted` is told each frame's length.
/// None when the placeholder mapping could not be made.
pub fn file_body(
    outbox: &Outbox,
    file: Arc<File>,
    offset: u64,
    len: u64,
    counted: &'static metrics::Counter,
) -> Option<Body> {
    let placeholder = Placeholder::get()?;
    Some(Body::new(FileBody {
        outbox: outbox.clone(),
        placeholder,
        file,
        next: offset,
        end: offset + len,
        counted,
    }))
}

struct FileBody {
    outbox: Outbox,
    placeholder: &'static Placeholder,
    file: Arc<File>,
    next: u64,
    end: u64,
    counted: &'static metrics::Counter,
}

impl axum::body::HttpBody for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<http_body::Frame<Bytes>>>> {
        let left = self.end - self.next;
        if left == 0 {
            return Poll::Ready(None);
        }
        let len = left.min(Placeholder::LEN as u64);
        self.outbox.push(Job {
            file: self.file.clone(),
            offset: self.next,
            len,
            sent: 0,
        });
        self.next += len;
        self.counted.increment(len);
        let frame = self.placeholder.slice(len as usize);
        Poll::Ready(Some(Ok(http_body::Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.next == self.end
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.end - self.next)
    }
}

/// One accepted connection; see the module docs.
pub struct Conn {
    /// Always there until the connection is dropped (see `Drop`).
    tcp: Option<TcpStream>,
    outbox: Outbox,
    /// Until it hands over, the reader in front of hyper.
    front: Option<Box<Front>>,
    /// This side closed the connection (hyper shut it down after an
    /// answer that said `Connection: close`).
    closed_here: bool,
}

/// How long, and for how many bytes, a connection this side closed still
/// reads what its client sends (see `Drop for Conn`).
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(3);
const LINGER_BYTES: usize = 64 << 20;

impl Drop for Conn {
    /// A lingering close, as nginx's: when this side closed a connection,
    /// the client may still be sending the body of a request that was
    /// answered without reading it (a 401, 403 or 413 before the upload's
    /// bytes). Closing a socket with unread data resets the connection, and
    /// the reset can destroy the answer before the client reads it, so the
    /// client saw a broken connection instead of the error. The FIN went out
    /// with the shutdown; what still arrives is read and dropped, for at
    /// most `LINGER_TIME` and `LINGER_BYTES`, before the socket closes.
    fn drop(&mut self) {
        let Some(tcp) = self.tcp.take() else { return };
        if !self.closed_here {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(tcp));
        }
    }
}

async fn linger(mut tcp: TcpStream) {
    use tokio::io::AsyncReadExt;
    let until = tokio::time::Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = LINGER_BYTES;
    while left > 0 {
        match tokio::time::timeout_at(until, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

fn broken(what: &str) -> io::Error {
    io::Error::other(format!("sendfile bookkeeping: {what}"))
}

/// Bodies from this size on are sent with their response head held back
/// (`MSG_MORE`) until the file's first bytes join it.
///
/// Measured on this machine (2 vCPUs, loopback, the kernel's default BBR,
/// wrk -c64 on random ranges, against nginx's `tcp_nopush off`): corking
/// the head made 1 MiB ranges ~40 % faster, but 64 KiB ranges ~20 % slower
/// (~15 µs more kernel time per response, in TCP's pacing timer), and was
/// even at 256 KiB.
const CORK_FROM: u64 = 256 * 1024;

/// `send` flags for a response head followed by `body` bytes of a file.
pub(crate) fn head_flags(body: Option<u64>) -> i32 {
    match body {
        Some(len) if len >= CORK_FROM => libc::MSG_NOSIGNAL | libc::MSG_MORE,
        _ => libc::MSG_NOSIGNAL,
    }
}

/// Runs a non-blocking write `op` on `tcp`'s socket once it is writable.
pub(crate) fn poll_op(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    mut op: impl FnMut(i32) -> isize,
) -> Poll<io::Result<usize>> {
    let fd = tcp.as_raw_fd();
    loop {
        ready!(tcp.poll_write_ready(cx))?;
        let res = tcp.try_io(Interest::WRITABLE, || {
            let n = op(fd);
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match res {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            other => return Poll::Ready(other),
        }
    }
}

/// Sends up to `len` bytes of `file` from `offset` to `tcp`'s socket once
/// it is writable; how many went.
pub(crate) fn poll_sendfile(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    file: &File,
    offset: u64,
    len: u64,
) -> Poll<io::Result<usize>> {
    // Linux sends at most 0x7ffff000 bytes per call.
    let count = len.min(0x7fff_f000) as usize;
    let n = ready!(poll_op(tcp, cx, |sock| {
        let mut off = offset as libc::off_t;
        // SAFETY: both fds are open for the call; `off` is a local.
        unsafe { libc::sendfile(sock, file.as_raw_fd(), &mut off, count) }
    }))?;
    if n == 0 {
        // Objects are never truncated in place (see the store), so this is a
        // file that went away under an open descriptor: fail the connection
        // rather than send a short body.
        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
    }
    Poll::Ready(Ok(n))
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        self.tcp.as_ref().expect("open until dropped")
    }

    fn tcp_mut(&mut self) -> &mut TcpStream {
        self.tcp.as_mut().expect("open until dropped")
    }
}

impl Conn {
    fn poll_op(
        &self,
        cx: &mut Context<'_>,
        op: impl FnMut(i32) -> isize,
    ) -> Poll<io::Result<usize>> {
        poll_op(self.tcp(), cx, op)
    }

    /// Sends the front job's bytes in place of `buf`, a placeholder slice
    /// that starts `at` bytes into the placeholder.
    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        at: usize,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let (file, offset, count) = {
            let jobs = self.outbox.0.lock().expect("not poisoned");
            let job = jobs
                .front()
                .ok_or_else(|| broken("no job for a file frame"))?;
            if at as u64 != job.sent || buf.len() as u64 != job.len - job.sent {
                return Poll::Ready(Err(broken("frame and job disagree")));
            }
            (job.file.clone(), job.offset + job.sent, buf.len() as u64)
        };
        let n = ready!(poll_sendfile(self.tcp(), cx, &file, offset, count))?;
        let mut jobs = self.outbox.0.lock().expect("not poisoned");
        if let Some(job) = jobs.front_mut() {
            job.sent += n as u64;
            if job.sent == job.len {
                jobs.pop_front();
            }
        }
        Poll::Ready(Ok(n))
    }

    fn write_bufs(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(placeholder) = Placeholder::get() else {
            return Pin::new(self.tcp_mut()).poll_write_vectored(cx, bufs);
        };
        let skip = bufs.iter().take_while(|b| b.is_empty()).count();
        let Some(first) = bufs.get(skip) else {
            return Poll::Ready(Ok(0));
        };
        if let Some(at) = placeholder.offset_of(first) {
            return self.poll_sendfile(cx, at, first);
        }
        // The plain slices up to the first file frame, without allocating:
        // hyper hands over at most 64 slices at a time.
        const MAX: usize = 64;
        let mut iovs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX];
        let (mut n, mut file_follows) = (0, false);
        for b in &bufs[skip..] {
            if placeholder.offset_of(b).is_some() {
                file_follows = true;
                break;
            }
            if n == MAX {
                break;
            }
            iovs[n] = libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            };
            n += 1;
        }
        let body = file_follows
            .then(|| {
                let jobs = self.outbox.0.lock().expect("not poisoned");
                jobs.front().map(|j| j.len - j.sent)
            })
            .flatten();
        let flags = head_flags(body);
        self.poll_op(cx, |sock| {
            // SAFETY: `iovs[..n]` points into `bufs`, alive for the call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iovs.as_mut_ptr();
            msg.msg_iovlen = n as _;
            unsafe { libc::sendmsg(sock, &msg, flags) }
        })
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let tcp = this.tcp.as_mut().expect("open until dropped");
        match &mut this.front {
            Some(front) if front.drained() => {
                this.front = None;
                Pin::new(tcp).poll_read(cx, buf)
            }
            Some(front) => front.poll_read(tcp, cx, buf),
            None => Pin::new(tcp).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_bufs(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write_bufs(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        // hyper then queues body frames as they are instead of copying them
        // into its own buffer, which is what lets a file frame reach us.
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.tcp_mut()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.closed_here = true;
        Pin::new(self.tcp_mut()).poll_shutdown(cx)
    }
}
