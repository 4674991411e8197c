//! The host's memory budget (`[host] max_resident_bytes`): what the versions in the routing table
//! hold — each one's shared snapshot image once plus its instances' private memory — stays within
//! it by evicting the least recently used versions. An evicted version stays ready and routed; its
//! next request brings it back from the compiled snapshot on disk (milliseconds) and waits for it.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::Registry;
use crate::runtime::{InstancePool, MemoryGovernor};

/// Keeps the registry's versions within a byte budget.
pub struct MemoryBudget {
    max: Option<u64>,
    registry: OnceLock<Weak<Registry>>,
    /// One eviction decision at a time, so two versions coming back do not both evict for the same
    /// room.
    deciding: Mutex<()>,
}

impl MemoryBudget {
    /// A budget of `max` bytes (`None`: unlimited, nothing is evicted).
    pub fn new(max: Option<u64>) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            max,
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
        table.versions().filter_map(|v| v.pool.clone()).collect()
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
    fn make_room(&self, needed: u64, pool: &InstancePool) {
        let Some(max) = self.max else { return };
        let _one = self.deciding.lock().unwrap();
        let mut others: Vec<(u64, u64, Arc<InstancePool>)> = self
            .pools()
            .into_iter()
            .filter(|p| !std::ptr::eq(Arc::as_ptr(p), pool))
            .map(|p| {
                let stats = p.stats();
                (p.last_used(), stats.resident_bytes(), p)
            })
            .filter(|(_, bytes, _)| *bytes > 0)
            .collect();
        let mut total: u64 =
            others.iter().map(|(_, b, _)| b).sum::<u64>() + pool.stats().resident_bytes() + needed;
        // Least recently used first; a version with a call in flight cannot go and is skipped.
        others.sort_by_key(|(used, _, _)| *used);
        for (_, bytes, other) in others {
            if total <= max {
                break;
            }
            if other.evict() {
                total = total.saturating_sub(bytes);
            }
        }
        if total > max {
            tracing::warn!(
                budget = max,
                resident = total,
                "over the memory budget: every other version is busy or already evicted"
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
