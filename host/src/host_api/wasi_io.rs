//! `wasi:io` (poll and streams) for guests whose calls may run on any thread, an async worker included.
//!
//! wasmtime-wasi's synchronous bindings run their blocking functions (`blocking-write-and-flush`,
//! `poll`, `pollable.block`, …) through `in_tokio`, which calls `Handle::block_on` and so panics on a
//! tokio worker ("Cannot start a runtime from within a runtime"). Ferry runs short calls inline on
//! a worker, so a model that prints a line or sleeps would panic a host thread there. These
//! definitions shadow those functions: each blocking one drives its future on the calling thread
//! itself, parked between wake-ups, never past the running call's deadline (past it the call is
//! interrupted as at an epoch tick: 504), and a wait that does block hands the async worker off
//! first (`block_in_place`), so a sleeping guest never holds one of the runtime's workers. Calls
//! that never wait (the guest's log, a pollable already ready) pay nothing for it.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime::Trap;
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamResult};
use wasmtime_wasi_io::bindings::wasi::io::poll::{
    Host as AsyncPoll, HostPollable as AsyncPollable,
};
use wasmtime_wasi_io::bindings::wasi::io::streams::{
    HostInputStream as AsyncInput, HostOutputStream as AsyncOutput,
};

/// What a guest's `wasi:io` calls work on: its resource table and the running call's deadline.
pub struct GuestIo<'a> {
    /// The instance's resource table (streams and pollables live there).
    pub table: &'a mut ResourceTable,
    /// When the running call is interrupted.
    pub deadline: Instant,
}

struct HasGuestIo;

impl HasData for HasGuestIo {
    type Data<'a> = GuestIo<'a>;
}

/// Replaces the blocking `wasi:io` functions that `wasmtime_wasi::p2::add_to_linker_sync` defined
/// (call it first) with ones that work on any thread and keep to the call's deadline.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> GuestIo<'_>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    poll::add_to_linker::<T, HasGuestIo>(linker, view)?;
    streams::add_to_linker::<T, HasGuestIo>(linker, view)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Longest a wait parks before looking again: a wake-up deferred by the worker's scheduler (tokio's
/// `yield_now` on a worker thread wakes only after the current task's poll) is not lost for long.
const RECHECK: Duration = Duration::from_millis(5);

/// Wakes the thread that waits.
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// [`block_until`] for stream functions: an interrupted wait is the stream's trap.
fn block_stream<T>(
    deadline: Instant,
    future: impl Future<Output = StreamResult<T>>,
) -> StreamResult<T> {
    block_until(deadline, future).map_err(wasmtime_wasi::p2::StreamError::Trap)?
}

/// Runs `future` to its end on this thread, or interrupts the call at `deadline`. Tokio's timers
/// and I/O need a runtime: the current one, else wasmtime-wasi's own.
fn block_until<F: Future>(deadline: Instant, future: F) -> wasmtime::Result<F::Output> {
    wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| {
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        // Most waits are over at once (a log line, a zero timeout that yields once): no hand-off.
        for _ in 0..2 {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return Ok(out);
            }
        }
        let mut wait = || loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(wasmtime::Error::new(Trap::Interrupt));
            }
            std::thread::park_timeout((deadline - now).min(RECHECK));
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return Ok(out);
            }
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            // Off the async worker first, so that the runtime's other tasks go on meanwhile.
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
    })
}

impl poll::Host for GuestIo<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        block_until(self.deadline, AsyncPoll::poll(self.table, pollables))?
    }
}

impl poll::HostPollable for GuestIo<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        block_until(self.deadline, AsyncPollable::ready(self.table, pollable))?
    }
    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        block_until(self.deadline, AsyncPollable::block(self.table, pollable))?
    }
    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        AsyncPollable::drop(self.table, pollable)
    }
}

impl streams::Host for GuestIo<'_> {
    fn convert_stream_error(
        &mut self,
        err: wasmtime_wasi::p2::StreamError,
    ) -> wasmtime::Result<streams::StreamError> {
        streams::Host::convert_stream_error(self.table, err)
    }
}

impl streams::HostOutputStream for GuestIo<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        block_until(self.deadline, AsyncOutput::drop(self.table, stream))?
    }
    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        streams::HostOutputStream::check_write(self.table, stream)
    }
    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        streams::HostOutputStream::write(self.table, stream, bytes)
    }
    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        let future = AsyncOutput::blocking_write_and_flush(self.table, stream, bytes);
        block_stream(self.deadline, future)
    }
    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        let future = AsyncOutput::blocking_write_zeroes_and_flush(self.table, stream, len);
        block_stream(self.deadline, future)
    }
    fn subscribe(
        &mut self,
        stream: Resource<DynOutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostOutputStream::subscribe(self.table, stream)
    }
    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        streams::HostOutputStream::write_zeroes(self.table, stream, len)
    }
    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        streams::HostOutputStream::flush(self.table, stream)
    }
    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        let stream = Resource::new_borrow(stream.rep());
        block_stream(
            self.deadline,
            AsyncOutput::blocking_flush(self.table, stream),
        )
    }
    fn splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        streams::HostOutputStream::splice(self.table, dst, src, len)
    }
    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        let future = AsyncOutput::blocking_splice(self.table, dst, src, len);
        block_stream(self.deadline, future)
    }
}

impl streams::HostInputStream for GuestIo<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        block_until(self.deadline, AsyncInput::drop(self.table, stream))?
    }
    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        streams::HostInputStream::read(self.table, stream, len)
    }
    fn blocking_read(
        &mut self,
        stream: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<Vec<u8>> {
        block_stream(
            self.deadline,
            AsyncInput::blocking_read(self.table, stream, len),
        )
    }
    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        streams::HostInputStream::skip(self.table, stream, len)
    }
    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        block_stream(
            self.deadline,
            AsyncInput::blocking_skip(self.table, stream, len),
        )
    }
    fn subscribe(
        &mut self,
        stream: Resource<DynInputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostInputStream::subscribe(self.table, stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wait_on_an_async_worker_neither_panics_nor_passes_the_deadline() {
        // A zero sleep yields once (deferred by the worker's scheduler), then is ready.
        let quick = block_until(Instant::now() + Duration::from_secs(5), async {
            tokio::task::yield_now().await;
            7
        });
        assert_eq!(quick.unwrap(), 7);
        let slept = block_until(
            Instant::now() + Duration::from_secs(5),
            tokio::time::sleep(Duration::from_millis(20)),
        );
        assert!(slept.is_ok());
        let started = Instant::now();
        let late = block_until(
            Instant::now() + Duration::from_millis(50),
            tokio::time::sleep(Duration::from_secs(60)),
        );
        let trap = late.unwrap_err();
        assert_eq!(trap.downcast_ref::<Trap>(), Some(&Trap::Interrupt));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_wait_without_any_runtime_uses_wasmtime_wasis_own() {
        // As in a pollable's `ready`: the timer is made when the future is first polled.
        let slept = block_until(Instant::now() + Duration::from_secs(5), async {
            tokio::time::sleep(Duration::from_millis(5)).await
        });
        assert!(slept.is_ok());
    }
}
