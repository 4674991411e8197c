//! What the host keeps per instance (the wasmtime store's data): a deny-by-default WASI context,
//! the log capture, the memory limiter, and the version's graphs as `wasi:nn` sees them.

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_nn::wit::WasiNnView;

use super::bindings::ferry::model::{log, types};
use super::guest_log::GuestLog;
use super::pacing::CallClock;
use super::LimitExceeded;
use crate::host_api::graph::{GraphClock, StoreGraphs, VersionGraphs};

/// Store data of one model instance.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) log: GuestLog,
    pub(crate) memory: MemoryLimiter,
    /// The running call's deadline in ticks, and its pacer.
    pub(crate) clock: CallClock,
    /// Made on first use for a version without graphs (its component cannot import `wasi:nn`).
    graphs: Option<StoreGraphs>,
}

impl GuestState {
    /// State for an instance allowed `memory_bytes` of linear memory, of a version with `graphs`.
    pub fn new(memory_bytes: u64, graphs: Option<&Arc<VersionGraphs>>) -> GuestState {
        let log = GuestLog::default();
        // Deny by default: no preopened directories, no environment or arguments, stdin closed,
        // no sockets, no name lookups. Clocks and randomness stay (language runtimes need them).
        let wasi = WasiCtxBuilder::new()
            .stdout(log.stream())
            .stderr(log.stream())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        GuestState {
            wasi,
            table: ResourceTable::new(),
            log,
            memory: MemoryLimiter::new(memory_bytes),
            clock: CallClock::default(),
            graphs: graphs.map(|g| StoreGraphs::new(Some(g))),
        }
    }

    /// What `wasi:nn`'s host functions work on.
    pub(crate) fn wasi_nn(state: &mut GuestState) -> WasiNnView<'_> {
        let graphs = state.graphs.get_or_insert_with(|| StoreGraphs::new(None));
        graphs.view(&mut state.table)
    }

    /// What `wasi:io`'s blocking functions work on: the table, and the running call's deadline.
    pub(crate) fn wasi_io(state: &mut GuestState) -> crate::host_api::wasi_io::GuestIo<'_> {
        crate::host_api::wasi_io::GuestIo {
            table: &mut state.table,
            deadline: state.clock.deadline(),
        }
    }

    /// The clock of this instance's graph runs, when its version has graphs.
    pub(crate) fn graph_clock(&self) -> Option<&GraphClock> {
        self.graphs.as_ref().map(StoreGraphs::clock)
    }
}

impl GuestState {
    /// True when the guest holds no handle to a host resource.
    pub(crate) fn table_is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for GuestState {}

impl log::Host for GuestState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Trace => "TRACE",
            log::Level::Debug => "DEBUG",
            log::Level::Info => "INFO",
            log::Level::Warn => "WARN",
            log::Level::Error => "ERROR",
        };
        self.log
            .write(format!("[{level}] {message}\n").as_bytes())
            .map_err(wasmtime::Error::new)
    }
}

/// Refuses linear-memory growth past the model's limit by trapping with [`LimitExceeded::Memory`], so
/// the call fails with a clear cause instead of a guest allocator's abort.
pub(crate) struct MemoryLimiter {
    limit: u64,
    /// Bytes of linear memory the instance has (every memory, from its creation on).
    current: u64,
}

impl MemoryLimiter {
    fn new(limit: u64) -> Self {
        MemoryLimiter { limit, current: 0 }
    }

    /// Bytes of linear memory the instance has now.
    pub(crate) fn current(&self) -> u64 {
        self.current
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            return Err(wasmtime::Error::new(LimitExceeded::Memory {
                desired: desired as u64,
                limit: self.limit,
            }));
        }
        // Called with `current == 0` when a memory is created, then on every growth.
        self.current += desired.saturating_sub(current) as u64;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any real model.
        Ok(desired <= 1_000_000)
    }
}
