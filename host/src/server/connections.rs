//! Accepting connections, and cutting off the ones that cost the host without being served: a cap on
//! open connections (the soft `RLIMIT_NOFILE` raised to the hard one at start), a timeout for a
//! connection's first bytes and for a request's headers, a minimum rate for its body, a stall limit
//! on writing an answer to a client that stops reading, a timeout for the whole request, a cap on
//! the streams of an HTTP/2 connection with keep-alive pings, and a drain deadline on graceful stop.
//!
//! axum's own `serve` sets none of these; this is the same hyper server with them. A connection
//! speaks HTTP/1.1, or HTTP/2 when it opens with HTTP/2's preface (gRPC clients on a plain port).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Sleep;

use super::error::ApiError;

/// How long and how much a connection may hold the host (`[http]` in the configuration).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Open connections at most; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// A request's headers must be complete within this long of the connection's opening or of
    /// its previous answer: it bounds a slow header and an idle keep-alive connection alike (hyper
    /// runs one timer for both).
    pub header_timeout: Duration,
    /// A body must arrive at no less than this many bytes a second, after `body_grace`.
    pub body_min_rate: u64,
    /// Time a body has before its rate counts.
    pub body_grace: Duration,
    /// Longest a written answer may wait for a client that does not read it.
    pub write_stall: Duration,
    /// Longest a request may take, answer included, on every route but uploads.
    pub request_timeout: Duration,
    /// Longest an upload may take.
    pub upload_timeout: Duration,
    /// Longest a graceful stop waits for requests in flight before it closes their connections.
    pub drain_timeout: Duration,
}

impl ConnectionLimits {
    /// The limits a configuration's `[http]` section sets.
    pub fn from_config(http: &crate::config::HttpSection) -> ConnectionLimits {
        let ms = Duration::from_millis;
        ConnectionLimits {
            max_connections: http.max_connections.max(1),
            header_timeout: ms(http.header_timeout_ms.max(1)),
            body_min_rate: http.body_min_bytes_per_s,
            body_grace: ms(http.body_grace_ms),
            write_stall: ms(http.write_stall_ms.max(1)),
            request_timeout: ms(http.request_timeout_ms.max(1)),
            upload_timeout: ms(http.upload_timeout_ms.max(1)),
            drain_timeout: ms(http.drain_timeout_ms),
        }
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits::from_config(&crate::config::HttpSection::default())
    }
}

/// Raises the soft limit on open files to the hard one (a host holds a socket per connection) and
/// answers the connections that fit under it, keeping room for the store's files and sockets.
pub fn connection_room(wanted: usize) -> usize {
    const RESERVED: u64 = 256;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct given, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return wanted;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    let room = limit.rlim_cur.saturating_sub(RESERVED).max(16);
    wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Serves `app` on `listener` under `limits` until `shutdown` completes, then drains: requests in
/// flight get up to `drain_timeout` to finish, after which their connections are closed.
pub async fn serve(
    listener: TcpListener,
    app: super::App,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let room = connection_room(limits.max_connections);
    if room < limits.max_connections {
        tracing::warn!(
            configured = limits.max_connections,
            allowed = room,
            "fewer connections than configured: the limit on open files is lower"
        );
    }
    let slots = Arc::new(Semaphore::new(room));
    let protocols = protocols(&limits);
    let entry_limits = Arc::new(limits.clone());
    // Set when the host stops: every connection then closes the way its protocol allows.
    let (stopping, stop_signal) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or a connection reset before it was accepted: wait a
                    // little rather than spin; the listener itself stays up.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(StallLimited::new(
            stream,
            limits.write_stall,
            limits.header_timeout,
            activity.clone(),
        ));
        let app = app.clone();
        let busy = activity.clone();
        let entry_limits = entry_limits.clone();
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let app = app.clone();
            // HTTP/2's requests are tracked, so that its connection knows when it is idle (hyper's
            // header timer bounds an idle HTTP/1.1 connection; HTTP/2 has none).
            let busy = (request.version() == axum::http::Version::HTTP_2)
                .then(|| Busy::start(busy.clone()));
            let request = entering(request, &entry_limits);
            async move {
                use tower::ServiceExt;
                let response = app.oneshot(request).await;
                Ok::<_, Infallible>(match (response, busy) {
                    (Ok(response), Some(busy)) => response.map(|body| {
                        Body::new(Tracked {
                            inner: body,
                            _busy: busy,
                        })
                    }),
                    (Ok(response), None) => response,
                    (Err(never), _) => match never {},
                })
            }
        });
        let connection = protocols.serve_connection(io, service).into_owned();
        let idle_limit = limits.header_timeout;
        let mut stop_signal = stop_signal.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let idle = activity.still_for(idle_limit, None);
            let mut idle = std::pin::pin!(idle);
            loop {
                // The connection first: a stream that arrives in the same wake as the idle timer
                // is taken (and counted in flight) before the timer's check runs.
                tokio::select! {
                    biased;
                    _ = connection.as_mut() => break,
                    () = &mut idle => {
                        // A client that leaves a GOAWAY unanswered (h2 closes once its PING is
                        // acknowledged) does not keep the socket open: dropped once it has sent
                        // nothing for the grace, or after another idle limit whatever it sends.
                        if activity.closing.load(Ordering::Relaxed) {
                            break;
                        }
                        // GOAWAY, not a dropped socket: a client about to send a request on the
                        // idle connection learns that it was not taken and sends it on a new one
                        // (gRPC clients retry such a call by themselves).
                        activity.start_closing();
                        connection.as_mut().graceful_shutdown();
                        idle.set(activity.still_for(IDLE_CLOSE_GRACE, Some(idle_limit)));
                    }
                    // HTTP/2 gets GOAWAY; HTTP/1.1 closes after the answer in progress, if any.
                    _ = stop_signal.wait_for(|stop| *stop), if !activity.closing.load(Ordering::Relaxed) => {
                        activity.start_closing();
                        connection.as_mut().graceful_shutdown();
                        idle.set(activity.still_for(IDLE_CLOSE_GRACE, Some(idle_limit)));
                    }
                }
            }
            drop(slot);
        });
        // Finished connections are reaped as we go, so the set does not grow with the host's age.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.try_join_next().is_some() {}
    tracing::info!(
        open = connections.len(),
        "stopped accepting; draining connections"
    );
    let _ = stopping.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            after = ?limits.drain_timeout,
            "requests still in flight at the drain deadline; closing their connections"
        );
    }
    // Not awaited: a connection whose guest call is still running ends when the call does (its
    // deadline); the host does not wait for it.
    connections.abort_all();
    Ok(())
}

/// What a connection is doing: whether it speaks HTTP/2, its requests in flight (answers still
/// being sent included), and since when it has had none.
struct Activity {
    opened: Instant,
    h2: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds from `opened` to the end of its last request.
    idle_since_ms: AtomicU64,
    /// Set once the connection has been told to close (GOAWAY sent, or HTTP/1.1's last answer).
    closing: AtomicBool,
    /// While closing: milliseconds from `opened` to the last bytes read from the client.
    heard_ms: AtomicU64,
    /// Milliseconds from `opened` to the moment it was told to close.
    closing_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            h2: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            heard_ms: AtomicU64::new(0),
            closing_since_ms: AtomicU64::new(0),
        }
    }

    /// Marks the connection as told to close (its grace starts).
    fn start_closing(&self) {
        self.closing_since_ms
            .store(self.now_ms(), Ordering::Relaxed);
        self.closing.store(true, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// Returns once the connection speaks HTTP/2 and has had nothing in flight for `limit`. With
    /// `heard_within`, it must also have sent nothing (a PING's acknowledgement, a slow client's
    /// late frames) for `limit` — for at most `heard_within` after it was told to close, so that a
    /// client that keeps sending frames (its own PINGs) but never lets the connection close does
    /// not keep it.
    async fn still_for(&self, limit: Duration, heard_within: Option<Duration>) {
        let limit_ms = limit.as_millis() as u64;
        loop {
            tokio::time::sleep(limit).await;
            // In flight first: a request that ends after this load has already moved
            // `idle_since_ms` by the time it is read (Release in `Busy::drop`).
            if !self.h2.load(Ordering::Relaxed) || self.in_flight.load(Ordering::Acquire) != 0 {
                continue;
            }
            let now = self.now_ms();
            let mut since = self.idle_since_ms.load(Ordering::Relaxed);
            if let Some(within) = heard_within {
                let closing_for = now.saturating_sub(self.closing_since_ms.load(Ordering::Relaxed));
                if closing_for < within.as_millis() as u64 {
                    since = since.max(self.heard_ms.load(Ordering::Relaxed));
                }
            }
            if now.saturating_sub(since) >= limit_ms {
                return;
            }
        }
    }
}

/// A request in flight on a connection, until its answer is sent (or dropped).
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Busy {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .idle_since_ms
            .store(self.0.now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// An answer's body that keeps its request counted as in flight until it is sent.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// HTTP/2's connection preface: a connection that sends a prefix of it is still being sniffed.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Streams an HTTP/2 connection may have open at once (each holds at most one request's budget).
const MAX_STREAMS: u32 = 128;

/// How long a connection that was sent GOAWAY may stay silent, with nothing in flight, before its
/// socket is dropped (a client acknowledges the GOAWAY's PING within a round trip, and h2 then
/// closes; a client that is still sending frames is waited for, up to another idle limit).
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Keep-alive pings on an idle HTTP/2 connection, to find callers that went away (a gRPC stream or
/// health watch may be idle for as long as its caller likes).
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// The HTTP/1.1 and HTTP/2 servers a connection is handed to, under `limits`.
fn protocols(
    limits: &ConnectionLimits,
) -> hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor> {
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(64 << 10)
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE);
    builder
}

/// A socket whose opening must come within `opening` (while the protocol is being told — a prefix
/// of HTTP/2's preface, or nothing yet — no protocol's own timer runs), and whose writes may not
/// wait longer than `stall` for a client that does not read: an answer nobody takes is not held
/// forever.
struct StallLimited<S> {
    inner: S,
    stall: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// Until the protocol is known: its deadline, how long that was, and the preface bytes seen.
    opening: Option<(Pin<Box<Sleep>>, Duration, usize)>,
    activity: Arc<Activity>,
}

impl<S> StallLimited<S> {
    fn new(inner: S, stall: Duration, opening: Duration, activity: Arc<Activity>) -> Self {
        StallLimited {
            inner,
            stall,
            timer: None,
            opening: Some((Box::pin(tokio::time::sleep(opening)), opening, 0)),
            activity,
        }
    }

    /// Follows the first bytes: the opening is over once they leave HTTP/2's preface (HTTP/1.1,
    /// whose header timer takes over) or complete it (HTTP/2).
    fn opened(&mut self, new: &[u8]) {
        let Some((_, _, seen)) = self.opening.as_mut() else {
            return;
        };
        let rest = &H2_PREFACE[*seen..];
        let n = new.len().min(rest.len());
        if new[..n] != rest[..n] {
            self.opening = None;
        } else if *seen + n == H2_PREFACE.len() {
            self.activity.h2.store(true, Ordering::Relaxed);
            self.opening = None;
        } else {
            *seen += n;
        }
    }

    /// On a write that cannot go on: starts the stall clock, or fails once it has run out.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let stall = self.stall;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing of the answer for {stall:?}"),
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallLimited<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => {
                let Some((timer, within, _)) = self.opening.as_mut() else {
                    return Poll::Pending;
                };
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client sent nothing within {within:?}"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            Poll::Ready(Ok(())) => {
                if self.opening.is_some() {
                    let this = &mut *self;
                    this.opened(&buf.filled()[before..]);
                }
                // Only a closing connection pays for the clock: its grace runs from the client's
                // last bytes.
                if self.activity.closing.load(Ordering::Relaxed) && buf.filled().len() > before {
                    let now = self.activity.now_ms();
                    self.activity.heard_ms.store(now, Ordering::Relaxed);
                }
                Poll::Ready(Ok(()))
            }
            failed => failed,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallLimited<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.stalled(cx).map(Err),
            done => {
                self.timer = None;
                done
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.stalled(cx).map(Err),
            done => {
                self.timer = None;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.stalled(cx).map(Err),
            done => {
                self.timer = None;
                done
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why a body was cut off.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived slower than {min_rate} bytes a second ({received} bytes in {elapsed:?})")]
pub struct SlowBody {
    min_rate: u64,
    received: u64,
    elapsed: Duration,
}

/// A request body held to a minimum rate: past its grace, `received` must keep up with
/// `min_rate × (elapsed − grace)`, or the next read fails.
pub struct MinRateBody<B = Body> {
    inner: B,
    started: Instant,
    received: u64,
    grace: Duration,
    min_rate: u64,
    timer: Pin<Box<Sleep>>,
}

impl<B> MinRateBody<B> {
    fn new(inner: B, grace: Duration, min_rate: u64) -> MinRateBody<B> {
        let started = Instant::now();
        MinRateBody {
            inner,
            started,
            received: 0,
            grace,
            min_rate,
            timer: Box::pin(tokio::time::sleep_until((started + grace).into())),
        }
    }

    /// When the body falls behind unless more of it arrives.
    fn due(&self) -> Instant {
        let owed = Duration::from_secs_f64(self.received as f64 / self.min_rate.max(1) as f64);
        self.started + self.grace + owed
    }
}

impl<B> HttpBody for MinRateBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(axum::Error::new(e)))),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    let due = this.due();
                    this.timer.as_mut().reset(due.into());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(SlowBody {
                    min_rate: this.min_rate,
                    received: this.received,
                    elapsed: this.started.elapsed(),
                })))),
                Poll::Pending => Poll::Pending,
            },
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// True when `error` (from reading a body) is a body cut off for its rate.
pub fn is_slow_body(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<SlowBody>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// `request` as the routes take it: its body held to the minimum rate of `limits`, but gRPC's (a
/// stream may rest between messages, and the gRPC front end holds each unary call's message to the
/// rate itself). Done where the request enters, not in a layer: one boxed body, no boxed future.
fn entering<B>(request: Request<B>, limits: &ConnectionLimits) -> Request<Body>
where
    B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    if super::grpc::is_grpc(&request) {
        return request.map(Body::new);
    }
    request.map(|body| rate_limited(body, limits))
}

/// `body`, held to the minimum rate of `limits` (boxed once, whatever its type).
pub(super) fn rate_limited<B>(body: B, limits: &ConnectionLimits) -> Body
where
    B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    if limits.body_min_rate == 0 {
        return Body::new(body);
    }
    Body::new(MinRateBody::new(
        body,
        limits.body_grace,
        limits.body_min_rate,
    ))
}

/// Layer: a request that takes longer than `limit` is answered 503 and its handler dropped (which
/// gives back whatever it held: queue places, budget, staged files). A plain tower layer (not
/// `from_fn`): no boxed future and no copy of the route per request beyond the router's own.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeLayer {
    limit: Duration,
}

impl RequestTimeLayer {
    pub fn new(limit: Duration) -> RequestTimeLayer {
        RequestTimeLayer { limit }
    }
}

impl<S> tower::Layer<S> for RequestTimeLayer {
    type Service = RequestTime<S>;

    fn layer(&self, inner: S) -> RequestTime<S> {
        RequestTime {
            inner,
            limit: self.limit,
        }
    }
}

/// A service whose requests may take at most `limit` ([`RequestTimeLayer`]).
#[derive(Debug, Clone)]
pub struct RequestTime<S> {
    inner: S,
    limit: Duration,
}

impl<S> tower::Service<Request<Body>> for RequestTime<S>
where
    S: tower::Service<Request<Body>, Response = axum::response::Response, Error = Infallible>,
{
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = TimedAnswer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        TimedAnswer {
            answer: tokio::time::timeout(self.limit, self.inner.call(request)),
            limit: self.limit,
        }
    }
}

pin_project_lite::pin_project! {
    /// A route's answer, or 503 once the request's time is up.
    pub struct TimedAnswer<F> {
        #[pin]
        answer: tokio::time::Timeout<F>,
        limit: Duration,
    }
}

impl<F> Future for TimedAnswer<F>
where
    F: Future<Output = Result<axum::response::Response, Infallible>>,
{
    type Output = Result<axum::response::Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.answer.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(answer)) => Poll::Ready(answer),
            Poll::Ready(Err(_)) => {
                let limit = *this.limit;
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the request took longer than the host's limit of {limit:?}"),
                );
                e.retry_after = Some(1);
                Poll::Ready(Ok(e.into_response()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body that sends nothing until `sender` does (or is dropped).
    fn silent_body() -> (tokio::sync::mpsc::Sender<Result<Bytes, io::Error>>, Body) {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(4);
        let stream = futures_util::stream::unfold(receiver, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        (sender, Body::from_stream(stream))
    }

    #[tokio::test]
    async fn bodies_keep_the_minimum_rate_from_where_they_enter_but_grpc_streams_may_rest() {
        let limits = ConnectionLimits {
            body_min_rate: 1000,
            body_grace: Duration::from_millis(50),
            ..ConnectionLimits::default()
        };
        let request = |content_type: &str, body: Body| {
            Request::builder()
                .header(axum::http::header::CONTENT_TYPE, content_type)
                .body(body)
                .unwrap()
        };
        let (_json_sender, body) = silent_body();
        let mut json = entering(request("application/json", body), &limits).into_body();
        let cut = json.frame().await.unwrap().unwrap_err();
        assert!(is_slow_body(&cut), "{cut}");
        // A gRPC stream may rest between messages: still waiting long past the grace.
        let (_grpc_sender, body) = silent_body();
        let mut grpc = entering(request("application/grpc", body), &limits).into_body();
        let waited = tokio::time::timeout(Duration::from_millis(300), grpc.frame()).await;
        assert!(waited.is_err(), "a resting gRPC stream was cut off");
    }

    #[tokio::test]
    async fn a_request_past_its_time_is_answered_503_and_its_handler_dropped() {
        struct Held(Arc<AtomicBool>);
        impl Drop for Held {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let handler_dropped = dropped.clone();
        let never = tower::service_fn(move |_: Request<Body>| {
            let held = Held(handler_dropped.clone());
            async move {
                let _held = held;
                std::future::pending::<Result<axum::response::Response, Infallible>>().await
            }
        });
        let timed = tower::Layer::layer(&RequestTimeLayer::new(Duration::from_millis(50)), never);
        let answer = tower::ServiceExt::oneshot(timed, Request::new(Body::empty()))
            .await
            .unwrap();
        assert!(dropped.load(Ordering::SeqCst), "the handler was kept");
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers()[axum::http::header::RETRY_AFTER], "1");
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("the request took longer than the host's limit of 50ms"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn stalled_bodies_are_cut_off() {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(4);
        let stream = futures_util::stream::unfold(receiver, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let mut body = MinRateBody::new(Body::from_stream(stream), Duration::from_millis(50), 1000);
        sender.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"abc"));
        let started = Instant::now();
        let cut = body.frame().await.unwrap().unwrap_err();
        assert!(is_slow_body(&cut), "{cut}");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(sender);
    }
}
