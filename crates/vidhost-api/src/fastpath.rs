//! The connection answers plain `GET /play/…` requests itself.
//!
//! Players and CDNs fetch segments and ranges in long runs of small GETs on
//! keep-alive connections, and for those the per-request work of hyper,
//! axum and the middleware stack (parse into a `Request`, route, four
//! layers, boxed futures, encode) cost about as much CPU as sending the
//! bytes (profiled on 64 KiB ranges: 27 µs of user time per request against
//! nginx's 5). So each connection starts in front of hyper: [`Front`] reads
//! the request head itself (httparse, the parser hyper uses), and when it is
//! a `GET` that [`delivery::quick`] can answer as a plain 200/206 from a
//! file on this machine, it writes the head and `sendfile`s the bytes.
//!
//! Anything else (another route, a query, `Origin`, a body, `Connection`
//! other than keep-alive, HTTP/1.0, HTTP/2, an error, 304, 416, HEAD, a
//! large answer, a grant this node cannot check without the catalog)
//! hands the connection to hyper for good, with every byte read so far
//! put back in front of the stream. The decision comes before anything
//! of that request is written, so each request gets exactly one answer,
//! and the answer is the one the router gives (`quick` reuses its route
//! table, grant check, range planning and headers, and the metrics count
//! the request under the same route).

use crate::routes::delivery::{self, Quick};
use crate::state::SharedState;
use axum::http::HeaderName;
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

/// Request heads longer than this go to hyper (which has its own limits).
const MAX_HEAD: usize = 8 * 1024;

/// The `Date` header, formatted once a second per thread (as hyper does).
pub(crate) fn with_date(f: impl FnOnce(&str)) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        f(&d.1)
    })
}

/// The answers connections are writing themselves, so that a graceful
/// shutdown lets them finish: hyper-util's graceful shutdown closes a
/// connection it has not seen a request on at once, which would cut such an
/// answer off mid-body.
#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    in_flight: AtomicUsize,
}

impl Drain {
    /// Stops new answers here (connections hand every further request to
    /// hyper, which shuts down gracefully), then waits, at most `limit`,
    /// until the answers being written are done.
    pub async fn finish(&self, limit: std::time::Duration) {
        self.draining.store(true, Ordering::SeqCst);
        let until = Instant::now() + limit;
        while self.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Counts an answer in flight, unless shutdown has begun. The count
    /// comes first, so `finish` either sees it or this sees `draining`.
    fn enter(self: &Arc<Self>) -> Option<Flight> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let flight = Flight(self.clone());
        (!self.draining.load(Ordering::SeqCst)).then_some(flight)
    }
}

/// One answer in flight; dropping it (done, failed or abandoned) uncounts it.
struct Flight(Arc<Drain>);

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request answered here, being written.
struct Sending {
    quick: Quick,
    head_sent: usize,
    sent: u64,
    _flight: Flight,
}

/// The read side of a connection while it is in front of hyper.
pub(crate) struct Front {
    state: SharedState,
    drain: Arc<Drain>,
    /// Bytes read from the socket and not yet answered or handed on.
    buf: Vec<u8>,
    /// Where the unconsumed bytes of `buf` start.
    at: usize,
    /// How many bytes from `at` are known not to hold a whole head, so a
    /// head that trickles in is parsed again only when a line ends.
    scanned: usize,
    /// hyper has the connection from here on.
    handed: bool,
    /// Some request was answered here.
    answered: bool,
    sending: Option<Sending>,
    memo: delivery::QuickMemo,
}

impl Front {
    pub(crate) fn new(state: SharedState, drain: Arc<Drain>) -> Front {
        Front {
            state,
            drain,
            buf: Vec::new(),
            at: 0,
            scanned: 0,
            handed: false,
            answered: false,
            sending: None,
            memo: delivery::QuickMemo::default(),
        }
    }

    /// Handed over, with nothing of ours left to give hyper.
    pub(crate) fn drained(&self) -> bool {
        self.handed && self.at == self.buf.len()
    }

    /// hyper's read: answers what can be answered here, and gives hyper
    /// the bytes of everything else.
    pub(crate) fn poll_read(
        &mut self,
        tcp: &mut TcpStream,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.handed {
                if self.at < self.buf.len() {
                    let n = dst.remaining().min(self.buf.len() - self.at);
                    dst.put_slice(&self.buf[self.at..self.at + n]);
                    self.at += n;
                    if self.at == self.buf.len() {
                        self.buf = Vec::new();
                        self.at = 0;
                    }
                    return Poll::Ready(Ok(()));
                }
                return Pin::new(tcp).poll_read(cx, dst);
            }
            if let Some(sending) = &mut self.sending {
                ready!(sending.poll_send(tcp, cx))?;
                self.sending = None;
                continue;
            }
            match self.answer() {
                Next::Answer(quick, flight) => {
                    self.answered = true;
                    self.sending = Some(Sending {
                        quick,
                        head_sent: 0,
                        sent: 0,
                        _flight: flight,
                    });
                    continue;
                }
                Next::Hand => {
                    self.handed = true;
                    continue;
                }
                Next::Refuse(why) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)))
                }
                Next::More => {}
            }
            if self.at > 0 {
                self.buf.drain(..self.at);
                self.at = 0;
            }
            self.buf.reserve(4096);
            let spare = self.buf.spare_capacity_mut();
            let mut rb = ReadBuf::uninit(spare);
            ready!(Pin::new(&mut *tcp).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                // End of stream: hyper gets what is left, then the end.
                self.handed = true;
                continue;
            }
            // SAFETY: `poll_read` initialised the first `n` spare bytes.
            unsafe { self.buf.set_len(self.buf.len() + n) };
        }
    }

    /// What to do with the bytes at the front of `buf`.
    fn answer(&mut self) -> Next {
        let bytes = &self.buf[self.at..];
        if bytes.is_empty() {
            return Next::More;
        }
        // hyper-util picks HTTP/1 or HTTP/2 from the first bytes it reads,
        // which (until we hand over) come after our answers: the HTTP/2
        // preface after HTTP/1 requests is refused, as hyper's HTTP/1 would.
        const PREFACE: &[u8] = b"PRI ";
        let k = bytes.len().min(PREFACE.len());
        if self.answered && bytes[..k] == PREFACE[..k] {
            return if k < PREFACE.len() {
                Next::More
            } else {
                Next::Refuse("the HTTP/2 preface after HTTP/1 requests")
            };
        }
        // A head ends with an empty line: nothing new to parse until a
        // line ends in the bytes that came since the last look.
        let fresh = &bytes[self.scanned.saturating_sub(3)..];
        if self.scanned > 0 && !fresh.contains(&b'\n') && bytes.len() < MAX_HEAD {
            self.scanned = bytes.len();
            return Next::More;
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let n = match req.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if bytes.len() < MAX_HEAD => {
                self.scanned = bytes.len();
                return Next::More;
            }
            // Too long, too many headers, malformed: hyper's to answer.
            _ => return Next::Hand,
        };
        let start = Instant::now();
        let Some(flight) = self.drain.enter() else {
            return Next::Hand;
        };
        match quick(&self.state, &req, &mut self.memo) {
            Some(q) => {
                crate::metrics::record_http(q.route, q.status, start);
                crate::metrics::delivered_bytes().increment(q.len);
                crate::metrics::quick_answers().increment(1);
                self.at += n;
                self.scanned = 0;
                Next::Answer(q, flight)
            }
            None => Next::Hand,
        }
    }
}

enum Next {
    Answer(Quick, Flight),
    Hand,
    /// Fail the connection.
    Refuse(&'static str),
    More,
}

/// Path bytes the quick answers accept: those of tokens (base64url and
/// dots) and of plain file names; anything else (percent-escapes, a
/// query) goes the general way.
fn plain_path(path: &str) -> bool {
    path.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
}

/// A header value as `HeaderValue::to_str` reads it: visible ASCII only.
fn text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (32..127).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

fn quick(
    state: &SharedState,
    req: &httparse::Request<'_, '_>,
    memo: &mut delivery::QuickMemo,
) -> Option<Quick> {
    if req.method != Some("GET") || req.version != Some(1) {
        return None;
    }
    let path = req.path?;
    if !path.starts_with("/play/") || !plain_path(path) {
        return None;
    }
    for h in req.headers.iter() {
        let is = |n: &str| h.name.eq_ignore_ascii_case(n);
        // CORS, bodies, upgrades and connection handling are the router's.
        let general = is("origin")
            || is("transfer-encoding")
            || is("expect")
            || is("upgrade")
            || (is("content-length") && h.value != b"0")
            || (is("connection") && !h.value.eq_ignore_ascii_case(b"keep-alive"));
        if general {
            return None;
        }
    }
    let header = |name: HeaderName| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name.as_str()))
            .and_then(|h| text(h.value))
    };
    delivery::quick(state, path, header, memo)
}

impl Sending {
    /// Writes the head, then the body by `sendfile` (see
    /// `sendfile::head_flags` for when the head waits for the body).
    fn poll_send(&mut self, tcp: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let q = &self.quick;
        while self.head_sent < q.head.len() {
            let rest = &q.head[self.head_sent..];
            let n = ready!(crate::sendfile::poll_op(tcp, cx, |sock| {
                // SAFETY: `rest` is alive for the call.
                unsafe {
                    libc::send(
                        sock,
                        rest.as_ptr() as *const libc::c_void,
                        rest.len(),
                        crate::sendfile::head_flags(Some(q.len)),
                    )
                }
            }))?;
            self.head_sent += n;
        }
        while self.sent < q.len {
            let (offset, left) = (q.offset + self.sent, q.len - self.sent);
            let n = ready!(crate::sendfile::poll_sendfile(
                tcp, cx, &q.file, offset, left
            ))?;
            self.sent += n as u64;
        }
        Poll::Ready(Ok(()))
    }
}
