//! The host's memory budget (`[host] max_resident_bytes`): what the versions in the routing table
//! hold — each one's shared snapshot image once plus its instances' private memory — stays within
//! it by evicting the least recently used versions. An evicted version stays ready and routed; its
//! next request brings it back from the compiled snapshot on disk (milliseconds) and waits for it.
//! The engine's instance slots (`[host] total_instances`) are budgeted the same way, budget or not:
//! a host with more versions than slots keeps the recently used ones instantiated.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::Registry;
use crate::runtime::{InstancePool, MemoryGovernor, PoolStats, Room};

/// Keeps the registry's versions within a byte budget.
pub struct MemoryBudget {
    max: Option<u64>,
    max_instances: usize,
    registry: OnceLock<Weak<Registry>>,
    /// One eviction decision at a time, so two versions coming back do not both evict for the same
    /// room.
    deciding: Mutex<()>,
}

impl MemoryBudget {
    /// A budget of `max` bytes (`None`: unlimited) and `max_instances` instance slots.
    pub fn new(max: Option<u64>, max_instances: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            max,
            max_instances,
            registry: OnceLock::new(),
            deciding: Mutex::new(()),
        })
    }

    /// The budget, if there is one.
    pub fn max(&self) -> Option<u64> {
        self.max
    }

    pub(super) fn attach(&self, registry: &Arc<Registry>) {
        let _ = self.registry.set(Arc::downgrade(registry));
    }

    /// Pools of every version in the routing table.
    fn pools(&self) -> Vec<Arc<InstancePool>> {
        let Some(registry) = self.registry.get().and_then(Weak::upgrade) else {
            return Vec::new();
        };
        let table = registry.table();
        table
            .versions()
            .filter_map(|v| v.ready().map(|r| r.pool.clone()))
            .collect()
    }

    /// Bytes the routed versions hold now.
    pub fn resident_bytes(&self) -> u64 {
        self.pools()
            .iter()
            .map(|p| p.stats().resident_bytes())
            .sum()
    }
}

impl MemoryGovernor for MemoryBudget {
    fn make_room(&self, needed: Room, pool: &InstancePool) {
        let _one = self.deciding.lock().unwrap();
        let all: Vec<(u64, PoolStats, Arc<InstancePool>)> = self
            .pools()
            .into_iter()
            .filter(|p| !std::ptr::eq(Arc::as_ptr(p), pool))
            .map(|p| (p.last_used(), p.stats(), p))
            .collect();
        let own = pool.stats();
        // Every routed version's bytes, evicted ones' graphs included (an eviction frees its
        // instances and code, not its graphs, which stay until the version unloads).
        let mut bytes: u64 = all.iter().map(|(_, s, _)| s.resident_bytes()).sum::<u64>()
            + own.resident_bytes()
            + needed.bytes;
        let mut others: Vec<(u64, PoolStats, Arc<InstancePool>)> = all
            .into_iter()
            .filter(|(_, stats, _)| stats.resident)
            .collect();
        let mut instances: usize =
            others.iter().map(|(_, s, _)| s.live).sum::<usize>() + own.live + needed.instances;
        let max_bytes = self.max.unwrap_or(u64::MAX);
        let fits =
            |bytes: u64, instances: usize| bytes <= max_bytes && instances <= self.max_instances;
        // Least recently used first; a version with a call in flight cannot go and is skipped.
        others.sort_by_key(|(used, _, _)| *used);
        for (_, stats, other) in others {
            if fits(bytes, instances) {
                break;
            }
            // Only what an eviction gives back counts; a version of nothing but graphs stays.
            let freed = stats.resident_bytes() - stats.graph_bytes;
            if (freed == 0 && stats.live == 0) || !other.evict() {
                continue;
            }
            bytes = bytes.saturating_sub(freed);
            instances = instances.saturating_sub(stats.live);
        }
        if !fits(bytes, instances) {
            tracing::warn!(
                budget = self.max,
                resident = bytes,
                instance_slots = self.max_instances,
                instances,
                "over the host's budget: every other version is busy or already evicted"
            );
        }
    }
}

/// The process's memory as the kernel counts it (`/proc/self/smaps_rollup`, Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessMemory {
    /// Resident set size: every page mapped and present, shared ones whole.
    pub rss_bytes: u64,
    /// Proportional set size: shared pages divided among the processes (and, for a snapshot image,
    /// the instances) that map them.
    pub pss_bytes: u64,
}

impl ProcessMemory {
    /// This process's figures now; `None` where the kernel does not say.
    pub fn read() -> Option<ProcessMemory> {
        Self::of("self")
    }

    /// The figures of process `pid` (`"self"` for this one).
    pub fn of(pid: &str) -> Option<ProcessMemory> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map(|kib| kib * 1024)
        };
        Some(ProcessMemory {
            rss_bytes: field("Rss:")?,
            pss_bytes: field("Pss:")?,
        })
    }
}
