//! The guest's log: stdout, stderr and the `log` import, captured into one buffer per call with a byte
//! budget, then forwarded to the host's `tracing` logs under the model's name.
//!
//! Past the budget the guest traps with [`LimitExceeded::Log`]: a flood costs one call, never the
//! host's disk or memory.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

use super::LimitExceeded;

#[derive(Debug, Default)]
struct Buffer {
    text: Vec<u8>,
    budget: usize,
    overflowed: bool,
}

/// One instance's log capture, shared by its stdout, stderr and `log` import.
#[derive(Debug, Clone, Default)]
pub struct GuestLog {
    buffer: Arc<Mutex<Buffer>>,
}

impl GuestLog {
    /// Starts a call with `budget` bytes of log allowed.
    pub fn begin_call(&self, budget: usize) {
        let mut b = self.buffer.lock().unwrap();
        b.text.clear();
        b.budget = budget;
        b.overflowed = false;
    }

    /// Appends `bytes`, or fails when that would exceed the call's budget.
    pub fn write(&self, bytes: &[u8]) -> Result<(), LimitExceeded> {
        let mut b = self.buffer.lock().unwrap();
        if b.text.len() + bytes.len() > b.budget {
            b.overflowed = true;
            return Err(LimitExceeded::Log { limit: b.budget });
        }
        b.text.extend_from_slice(bytes);
        Ok(())
    }

    /// True when the guest tried to write past its budget in this call.
    pub fn overflowed(&self) -> bool {
        self.buffer.lock().unwrap().overflowed
    }

    /// Bytes of log the current call may write.
    pub fn budget(&self) -> usize {
        self.buffer.lock().unwrap().budget
    }

    /// The call's log so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap().text).into_owned()
    }

    /// Sends the call's log to `tracing`, one event per line, and empties the buffer.
    pub fn flush_to_tracing(&self, model: &str) {
        let text = std::mem::take(&mut self.buffer.lock().unwrap().text);
        for line in String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| !l.is_empty())
        {
            tracing::info!(target: "ferry::guest", model, "{line}");
        }
    }

    /// A stream for the guest's stdout or stderr that writes into this capture.
    pub fn stream(&self) -> GuestLogStream {
        GuestLogStream(self.clone())
    }
}

/// stdout/stderr of a guest, writing into its [`GuestLog`].
pub struct GuestLogStream(GuestLog);

impl IsTerminal for GuestLogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(GuestLogStream(self.0.clone()))
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp2 streams are linked; keep a working writer anyway, bounded the same way.
        Box::new(AsyncGuestLog(self.0.clone()))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestLogStream {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestLogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0
            .write(&bytes)
            .map_err(|limit| StreamError::Trap(wasmtime::Error::new(limit)))
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept; `write` enforces the budget and traps with a clear error.
        Ok(64 << 10)
    }
}

struct AsyncGuestLog(GuestLog);

impl tokio::io::AsyncWrite for AsyncGuestLog {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(
            self.0
                .write(buf)
                .map(|()| buf.len())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::Other, e)),
        )
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_past_its_budget_overflows_and_the_next_call_starts_fresh() {
        let log = GuestLog::default();
        log.begin_call(8);
        log.write(b"12345").unwrap();
        assert_eq!(log.write(b"6789"), Err(LimitExceeded::Log { limit: 8 }));
        assert!(log.overflowed());
        assert_eq!(log.text(), "12345");
        log.begin_call(8);
        assert!(!log.overflowed());
        assert_eq!(log.text(), "");
    }
}
