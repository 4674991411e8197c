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
        let others: Vec<(Weighed, Arc<InstancePool>)> = self
            .pools()
            .into_iter()
            .filter(|p| !std::ptr::eq(Arc::as_ptr(p), pool))
            .map(|p| {
                let facts = Weighed {
                    last_used: p.last_used(),
                    stats: p.stats(),
                };
                (facts, p)
            })
            .collect();
        let facts: Vec<Weighed> = others.iter().map(|(f, _)| f.clone()).collect();
        let limits = Limits {
            bytes: self.max.unwrap_or(u64::MAX),
            instances: self.max_instances,
        };
        let after = evict_until_fits(&facts, &pool.stats(), needed, limits, |i| {
            others[i].1.evict()
        });
        if !after.fits(limits) {
            tracing::warn!(
                budget = self.max,
                resident = after.bytes,
                instance_slots = self.max_instances,
                instances = after.instances,
                "over the host's budget: every other version is busy or already evicted"
            );
        }
    }
}

/// A routed version's pool, as the budget weighs it.
#[derive(Debug, Clone)]
struct Weighed {
    /// When it was last called (larger: more recently).
    last_used: u64,
    stats: PoolStats,
}

/// The budget's limits.
#[derive(Debug, Clone, Copy)]
struct Limits {
    bytes: u64,
    instances: usize,
}

/// What the routed versions hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    bytes: u64,
    instances: usize,
}

impl Held {
    fn fits(self, limits: Limits) -> bool {
        self.bytes <= limits.bytes && self.instances <= limits.instances
    }
}

/// The eviction order, as a decision: every routed version's bytes count (an evicted one's graphs
/// included: an eviction frees instances and code, not graphs), and so do `own`'s and what it
/// `needed`; then the other resident pools are evicted least recently used first until what is
/// held fits — skipping one that would free nothing (graphs only) and one `evict` refuses (a call
/// in flight). The pool asking is never a candidate. Answers what is held after.
fn evict_until_fits(
    others: &[Weighed],
    own: &PoolStats,
    needed: Room,
    limits: Limits,
    mut evict: impl FnMut(usize) -> bool,
) -> Held {
    let mut held = Held {
        bytes: others.iter().map(|o| o.stats.resident_bytes()).sum::<u64>()
            + own.resident_bytes()
            + needed.bytes,
        instances: others
            .iter()
            .filter(|o| o.stats.resident)
            .map(|o| o.stats.live)
            .sum::<usize>()
            + own.live
            + needed.instances,
    };
    let mut order: Vec<usize> = (0..others.len())
        .filter(|i| others[*i].stats.resident)
        .collect();
    order.sort_by_key(|i| others[*i].last_used);
    for i in order {
        if held.fits(limits) {
            break;
        }
        let stats = &others[i].stats;
        let freed = stats.resident_bytes() - stats.graph_bytes;
        if (freed == 0 && stats.live == 0) || !evict(i) {
            continue;
        }
        held.bytes = held.bytes.saturating_sub(freed);
        held.instances = held.instances.saturating_sub(stats.live);
    }
    held
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

#[cfg(test)]
mod eviction {
    use super::*;

    /// A resident pool of `mib` MiB (private memory), `live` instances and `graph_mib` of graphs,
    /// last used at `used`.
    fn pool(used: u64, mib: u64, live: usize, graph_mib: u64, resident: bool) -> Weighed {
        Weighed {
            last_used: used,
            stats: PoolStats {
                live,
                resident,
                private_bytes: mib << 20,
                graph_bytes: graph_mib << 20,
                ..Default::default()
            },
        }
    }

    fn run(others: &[Weighed], own_mib: u64, max_mib: u64, busy: &[usize]) -> (Vec<usize>, Held) {
        let own = pool(0, own_mib, 1, 0, true).stats;
        let limits = Limits {
            bytes: max_mib << 20,
            instances: 100,
        };
        let mut tried = Vec::new();
        let held = evict_until_fits(others, &own, Room::default(), limits, |i| {
            tried.push(i);
            !busy.contains(&i)
        });
        (tried, held)
    }

    #[test]
    fn the_least_recently_used_go_first_and_only_until_it_fits() {
        // a (used 5), b (used 1), c (used 9), 10 MiB each; own 10 MiB; budget 25 MiB: two must go.
        let others = [
            pool(5, 10, 1, 0, true),
            pool(1, 10, 1, 0, true),
            pool(9, 10, 1, 0, true),
        ];
        let (tried, held) = run(&others, 10, 25, &[]);
        assert_eq!(tried, vec![1, 0], "b then a; c, the most recent, stays");
        assert_eq!(held.bytes, 20 << 20);
    }

    #[test]
    fn a_busy_pool_is_skipped_for_the_next() {
        let others = [pool(1, 10, 1, 0, true), pool(2, 10, 1, 0, true)];
        let (tried, held) = run(&others, 10, 25, &[0]);
        assert_eq!(tried, vec![0, 1]);
        assert_eq!(held.bytes, 20 << 20);
    }

    #[test]
    fn evicted_pools_count_their_graphs_and_are_no_candidates() {
        // An evicted pool with 8 MiB of graphs: counted, never tried; over budget afterwards.
        let others = [pool(1, 10, 0, 8, false)];
        let (tried, held) = run(&others, 10, 12, &[]);
        assert!(tried.is_empty());
        assert_eq!(held.bytes, 18 << 20);
        assert!(!held.fits(Limits {
            bytes: 12 << 20,
            instances: 100
        }));
    }

    #[test]
    fn a_pool_of_graphs_alone_is_not_evicted_for_nothing() {
        let others = [pool(1, 0, 0, 8, true), pool(2, 10, 1, 0, true)];
        let (tried, _) = run(&others, 10, 12, &[]);
        assert_eq!(tried, vec![1], "the graph-only pool frees nothing");
    }

    #[test]
    fn within_the_budget_nothing_goes() {
        let others = [pool(1, 10, 1, 0, true)];
        let (tried, held) = run(&others, 10, 100, &[]);
        assert!(tried.is_empty());
        assert_eq!(
            held,
            Held {
                bytes: 20 << 20,
                instances: 2
            }
        );
    }
}
