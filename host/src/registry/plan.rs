//! What this host should do with one model, decided as data: a pure function from what the store
//! wants (its view of the model, the versions promotes in flight have pinned) and what the host has
//! (the published entry, the loads running) to a [`Plan`]. No locks, clocks or I/O: the registry
//! executes plans ([`super::Registry`]'s `converge`), and every rule below has a test of its own in
//! this file's table (the id in brackets names it).
//!
//! **Listing.** A view with no versions removes the model at once [L1]. A version listed under an
//! alias's name fails for its name and is never loaded [L2]. A version keeps its listing (pool,
//! counters, breaker) while its manifest is the same; the same name with another manifest is a new
//! version, and the old one's cached files go [L3]. "Newest" is by sequence, not by name or the
//! view's order [L5].
//!
//! **Routing.** An alias moves here only once every version its new target gives a share to is
//! ready here (load-before-swap) [R1]; a split waits for every weighted target, weight-0 members
//! are loaded but not waited for [R2]. Until then the alias keeps its published target, while some
//! weighted version of it serves [R3]; versions of that held target the store deleted are carried
//! until the alias moves [R4]. An alias gone from the store goes at once [R5]; the traffic policy
//! is published at once [R6]. A deleted default keeps answering requests without a version until
//! its successor is ready, while the store holds a version that has not failed here [D1].
//!
//! **Wanted** (kept or loaded), unless the model is unloaded on request: the carried default,
//! every version an alias names in the store or here (weight 0 included), the shadow, pinned
//! versions, the newest version that has not failed here and, while that one is not ready, the
//! newest that is [W].
//!
//! **Transitions.** Unloaded on request relists every version "unloaded on request" [S1]; that
//! and a new manifest are the only ways out of a failure [S4]. A wanted version that is not loaded
//! loads [S2], except one waiting for the store, which loads again only when the store answers
//! (the sync loop, or once for a promote), not on every apply [S3]. A ready version nothing wants
//! is drained: out of routing, its pool goes with its last request [S5]; other unwanted listings
//! read "not wanted" [S6]. A load that nothing runs any more (its result was discarded while the
//! model was unloaded and loaded again) is started again rather than left "loading" forever [S7].
//! Loads start most urgent first: alias targets, then what keeps the model answering, then pins,
//! the shadow and the newest upload [LD1].
//!
//! **Finished loads.** A load's result is published only while the table still lists the same
//! manifest loading; otherwise it is dropped, and its cache files too when its manifest is gone [F].

use std::collections::{BTreeMap, BTreeSet};

use super::names;
use super::routing::DEFAULT_ALIAS;
use super::store::{ModelView, VersionManifest};
use super::traffic::{AliasTarget, TrafficPolicy};

/// Why a listed version holds no instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotLoaded {
    /// Nothing wants it: no alias, shadow or change in flight names it, and it is neither the
    /// newest version nor, while that one is not ready, the newest ready one.
    NotWanted,
    /// It was ready and stopped being wanted: out of routing; its pool goes with its last request.
    Drained,
    /// Its model was unloaded (the repository's `unload`).
    OnRequest,
    /// Its files could not be read while the store was unreachable (what the store said); tried again
    /// when the store answers, not in a loop.
    WaitingForStore(String),
}

impl std::fmt::Display for NotLoaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotLoaded::NotWanted => {
                f.write_str("not targeted by an alias and not the newest version")
            }
            NotLoaded::Drained => f.write_str("replaced as target; drained"),
            NotLoaded::OnRequest => f.write_str("unloaded on request"),
            NotLoaded::WaitingForStore(why) => write!(f, "waiting for the store: {why}"),
        }
    }
}

/// Where a version the host lists is in its life, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Being loaded (or meant to be: see [S7]).
    Loading,
    /// Serving.
    Ready,
    /// Will not serve; why.
    Failed(String),
    /// Listed without instances; why.
    NotLoaded(NotLoaded),
}

/// A listing the planner makes: every state but ready, which only a load makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// To be loaded (the plan's `loads` say so).
    Loading,
    /// Will not serve; why.
    Failed(String),
    /// Listed without instances; why.
    NotLoaded(NotLoaded),
}

impl From<Listing> for Seen {
    fn from(listing: Listing) -> Seen {
        match listing {
            Listing::Loading => Seen::Loading,
            Listing::Failed(why) => Seen::Failed(why),
            Listing::NotLoaded(why) => Seen::NotLoaded(why),
        }
    }
}

/// A version the host lists now.
#[derive(Debug, Clone, PartialEq)]
pub struct Have {
    /// What it is made of.
    pub manifest: VersionManifest,
    /// Where it is.
    pub state: Seen,
}

/// What the host has published of one model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Current {
    /// Versions by name.
    pub versions: BTreeMap<String, Have>,
    /// Alias → target as published here.
    pub aliases: BTreeMap<String, AliasTarget>,
    /// The traffic policy as published here.
    pub traffic: TrafficPolicy,
}

/// What the store and this host's changes in flight want of one model.
#[derive(Debug, Clone, Copy)]
pub struct Desired<'a> {
    /// The model as the store has it.
    pub view: &'a ModelView,
    /// Versions promotes, rollbacks and traffic changes in flight hold loaded.
    pub pins: &'a [String],
}

/// Whether versions waiting for the store are tried again by this plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// An ordinary apply: they keep waiting [S3].
    No,
    /// The store answered (or a promote asks, once): wanted ones load again.
    WaitingForStore,
}

/// Loads running now, by version name and sequence.
pub type InFlight = BTreeSet<(String, u64)>;

/// Why a version is wanted; the order is the order loads start in [LD1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Want {
    /// An alias names it in the store.
    StoreAlias,
    /// An alias published here names it (a held target).
    PublishedAlias,
    /// It keeps answering requests without a version until its successor is ready.
    CarriedDefault,
    /// The newest version that is ready, while the newest is not.
    NewestReady,
    /// A change in flight holds it.
    Pinned,
    /// The model's shadow.
    Shadow,
    /// The newest version that has not failed here.
    Newest,
}

/// What to do with one model.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing: the model is not listed and the store has none of it.
    Nothing,
    /// The store has no version of it: drop it from the table and collect its versions' files.
    Remove {
        /// Every version it listed.
        gone: Vec<VersionManifest>,
    },
    /// Publish the model as planned.
    Publish(ModelPlan),
}

/// One model as it is to be published, and what to do around the publish.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelPlan {
    /// Every version listed, and where its value comes from.
    pub versions: BTreeMap<String, Listed>,
    /// Alias → target as published here.
    pub aliases: BTreeMap<String, AliasTarget>,
    /// Aliases held on their published target, with the store's target they wait for.
    pub held: BTreeMap<String, AliasTarget>,
    /// The traffic policy.
    pub traffic: TrafficPolicy,
    /// The version that keeps answering requests without a version though the store deleted it.
    pub carried_default: Option<String>,
    /// Why each wanted version is wanted.
    pub wanted: BTreeMap<String, BTreeSet<Want>>,
    /// Loads to start, most urgent first.
    pub loads: Vec<VersionManifest>,
    /// Ready versions this plan takes out of routing.
    pub drained: Vec<String>,
    /// Versions leaving the model (absent, or replaced under their name): their files go after the
    /// publish.
    pub gone: Vec<VersionManifest>,
    /// Versions listed failed for their name by this plan (the store holds a clash).
    pub new_clashes: Vec<String>,
    /// True when the published entry would be the same: nothing to swap.
    pub unchanged: bool,
}

/// Where a planned version's listing comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Listed {
    /// The current listing, as it is (same manifest and state: same pool and counters).
    Keep,
    /// The current listing, though the store no longer has the version (a held alias target, the
    /// carried default).
    Carry,
    /// A new listing without instances.
    Fresh {
        /// What it is made of.
        manifest: VersionManifest,
        /// Loading, failed or not loaded.
        state: Listing,
    },
}

/// What to do with a load that finished [F].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// The table lists it loading: publish the result.
    Publish,
    /// It was unloaded meanwhile: drop the result.
    Discard,
    /// It was deleted or replaced meanwhile: drop the result and what it wrote to the cache.
    DiscardAndCollect,
}

/// What to do with a finished load of `manifest`, given what the table lists under its name.
pub fn loaded(listed: Option<&Have>, manifest: &VersionManifest) -> Loaded {
    match listed {
        Some(have) if have.manifest == *manifest && have.state == Seen::Loading => Loaded::Publish,
        Some(have) if have.manifest == *manifest => Loaded::Discard,
        _ => Loaded::DiscardAndCollect,
    }
}

/// The version a request without a version goes to: the `production` alias's heaviest weighted
/// target that is ready, else the newest ready version of those `listed`. `ready` answers a ready
/// version's sequence (`None`: not ready).
pub fn default_name<'a>(
    aliases: &BTreeMap<String, AliasTarget>,
    ready: impl Fn(&str) -> Option<u64>,
    listed: impl Iterator<Item = &'a String>,
) -> Option<String> {
    let production = aliases.get(DEFAULT_ALIAS).and_then(|target| match target {
        AliasTarget::Version(v) => ready(v).map(|_| v.clone()),
        AliasTarget::Split(s) => s
            .split
            .iter()
            .filter(|(v, w)| **w > 0 && ready(v).is_some())
            .max_by_key(|(_, w)| **w)
            .map(|(v, _)| v.clone()),
    });
    production.or_else(|| {
        listed
            .filter_map(|v| Some((v, ready(v)?)))
            .max_by_key(|(_, sequence)| *sequence)
            .map(|(v, _)| v.clone())
    })
}

/// A version being planned: its manifest, its state, and where its listing came from.
struct Draft {
    manifest: VersionManifest,
    state: DraftState,
    carried: bool,
}

enum DraftState {
    /// As the host lists it now.
    Have(Seen),
    /// As this plan lists it.
    Now(Listing),
}

impl Draft {
    fn ready(&self) -> bool {
        matches!(self.state, DraftState::Have(Seen::Ready))
    }
    fn failed(&self) -> bool {
        matches!(
            self.state,
            DraftState::Have(Seen::Failed(_)) | DraftState::Now(Listing::Failed(_))
        )
    }
}

/// Plans `model` (see the module docs). `current` is `None` when the table does not list it.
pub fn plan(
    model: &str,
    desired: Desired<'_>,
    current: Option<&Current>,
    in_flight: &InFlight,
    retry: Retry,
) -> Plan {
    let view = desired.view;
    if view.manifests.is_empty() {
        return match current {
            Some(c) => Plan::Remove {
                gone: c.versions.values().map(|h| h.manifest.clone()).collect(),
            },
            None => Plan::Nothing,
        };
    }
    let none = Current::default();
    let old = current.unwrap_or(&none);
    let mut manifests: Vec<&VersionManifest> = view.manifests.iter().collect();
    manifests.sort_by_key(|m| m.sequence);

    let clashing = names::clashing_versions(view);
    let mut plan = ModelPlan::default();
    let mut drafts = listing(model, &manifests, &clashing, old, &mut plan);
    plan.aliases = publish_aliases(view, old, &mut drafts, &mut plan.held);
    plan.traffic = view.traffic.clone();
    plan.carried_default = carry_default(view, old, &plan.aliases, &mut drafts);
    plan.wanted = wanted(desired, &manifests, &plan, &drafts);

    let mut loads = Vec::new();
    for (name, draft) in drafts.iter_mut() {
        if clashing.contains(name) {
            continue; // failed for its name, whatever else happens to the model
        }
        let wanted = plan.wanted.contains_key(name);
        let running = in_flight.contains(&(name.clone(), draft.manifest.sequence));
        match transition(view.unloaded, wanted, &draft.state, running, retry) {
            Step::Stay => {}
            Step::To(next) => draft.state = DraftState::Now(next),
            Step::Load => {
                loads.push(draft.manifest.clone());
                if !matches!(draft.state, DraftState::Have(Seen::Loading)) {
                    draft.state = DraftState::Now(Listing::Loading);
                }
            }
        }
    }
    let urgency =
        |m: &VersionManifest| plan.wanted.get(&m.version).and_then(|w| w.first().copied());
    loads.sort_by_key(|m| (urgency(m), std::cmp::Reverse(m.sequence)));
    plan.loads = loads;

    plan.drained = old
        .versions
        .iter()
        .filter(|(name, have)| {
            have.state == Seen::Ready && !drafts.get(*name).is_some_and(Draft::ready)
        })
        .map(|(name, _)| name.clone())
        .collect();
    plan.gone = old
        .versions
        .iter()
        .filter(|(name, have)| {
            !drafts
                .get(*name)
                .is_some_and(|d| d.manifest == have.manifest)
        })
        .map(|(_, have)| have.manifest.clone())
        .collect();

    for (name, draft) in drafts {
        let listed = match draft.state {
            DraftState::Have(_) if draft.carried => Listed::Carry,
            DraftState::Have(_) => Listed::Keep,
            DraftState::Now(state) => Listed::Fresh {
                manifest: draft.manifest,
                state,
            },
        };
        plan.versions.insert(name, listed);
    }
    plan.unchanged = current.is_some()
        && plan.versions.len() == old.versions.len()
        && plan
            .versions
            .iter()
            .all(|(name, l)| old.versions.contains_key(name) && !matches!(l, Listed::Fresh { .. }))
        && plan.aliases == old.aliases
        && plan.traffic == old.traffic;
    Plan::Publish(plan)
}

/// Which versions the model lists, and from where [L2, L3].
fn listing(
    model: &str,
    manifests: &[&VersionManifest],
    clashing: &BTreeSet<String>,
    old: &Current,
    plan: &mut ModelPlan,
) -> BTreeMap<String, Draft> {
    let mut drafts = BTreeMap::new();
    for m in manifests {
        let same = old.versions.get(&m.version).filter(|h| h.manifest == **m);
        let state = if clashing.contains(&m.version) {
            let reason = names::clash_reason(model, &m.version);
            match same {
                Some(have) if have.state == Seen::Failed(reason.clone()) => {
                    DraftState::Have(have.state.clone())
                }
                _ => {
                    plan.new_clashes.push(m.version.clone());
                    DraftState::Now(Listing::Failed(reason))
                }
            }
        } else {
            match same {
                Some(have) => DraftState::Have(have.state.clone()),
                // Not wanted until the wanted set says otherwise (see `transition`).
                None => DraftState::Now(Listing::NotLoaded(NotLoaded::NotWanted)),
            }
        };
        let draft = Draft {
            manifest: (*m).clone(),
            state,
            carried: false,
        };
        drafts.insert(m.version.clone(), draft);
    }
    drafts
}

/// Where each alias points here [R1-R5]; carries the versions of held targets the store deleted.
fn publish_aliases(
    view: &ModelView,
    old: &Current,
    drafts: &mut BTreeMap<String, Draft>,
    held: &mut BTreeMap<String, AliasTarget>,
) -> BTreeMap<String, AliasTarget> {
    let old_ready = |v: &str| old.versions.get(v).is_some_and(|h| h.state == Seen::Ready);
    let mut aliases = BTreeMap::new();
    for (alias, target) in &view.aliases.current {
        let all_ready = target
            .weighted_versions()
            .iter()
            .all(|v| drafts.get(*v).is_some_and(Draft::ready));
        let previous = old
            .aliases
            .get(alias)
            .filter(|p| !all_ready && p.weighted_versions().iter().any(|v| old_ready(v)));
        let published = match previous {
            Some(previous) => {
                for v in previous.versions() {
                    if let (false, Some(have)) = (drafts.contains_key(v), old.versions.get(v)) {
                        drafts.insert(v.to_owned(), carried(have));
                    }
                }
                if previous != target {
                    held.insert(alias.clone(), target.clone());
                }
                previous.clone()
            }
            None => target.clone(),
        };
        aliases.insert(alias.clone(), published);
    }
    aliases
}

fn carried(have: &Have) -> Draft {
    Draft {
        manifest: have.manifest.clone(),
        state: DraftState::Have(have.state.clone()),
        carried: true,
    }
}

/// The version that keeps answering requests without a version [D1]: when the planned entry would
/// route none, the one that answered does until a version that has not failed here is ready.
fn carry_default(
    view: &ModelView,
    old: &Current,
    aliases: &BTreeMap<String, AliasTarget>,
    drafts: &mut BTreeMap<String, Draft>,
) -> Option<String> {
    if view.unloaded {
        return None;
    }
    let ready_in = |drafts: &BTreeMap<String, Draft>, v: &str| {
        drafts
            .get(v)
            .filter(|d| d.ready())
            .map(|d| d.manifest.sequence)
    };
    if default_name(aliases, |v| ready_in(drafts, v), drafts.keys()).is_some() {
        return None;
    }
    let hope = view
        .manifests
        .iter()
        .any(|m| !drafts.get(&m.version).is_some_and(Draft::failed));
    if !hope {
        return None;
    }
    let old_ready = |v: &str| {
        old.versions
            .get(v)
            .filter(|h| h.state == Seen::Ready)
            .map(|h| h.manifest.sequence)
    };
    let serving = default_name(&old.aliases, old_ready, old.versions.keys())?;
    if !drafts.contains_key(&serving) {
        drafts.insert(serving.clone(), carried(&old.versions[&serving]));
    }
    Some(serving)
}

/// Every version the model should hold loaded, and why [W].
fn wanted(
    desired: Desired<'_>,
    manifests: &[&VersionManifest],
    plan: &ModelPlan,
    drafts: &BTreeMap<String, Draft>,
) -> BTreeMap<String, BTreeSet<Want>> {
    let view = desired.view;
    let mut wanted: BTreeMap<String, BTreeSet<Want>> = BTreeMap::new();
    if view.unloaded {
        return wanted;
    }
    let mut want = |v: &str, why: Want| {
        if drafts.contains_key(v) {
            wanted.entry(v.to_owned()).or_default().insert(why);
        }
    };
    if let Some(carried) = &plan.carried_default {
        want(carried, Want::CarriedDefault);
    }
    for target in view.aliases.current.values() {
        target
            .versions()
            .iter()
            .for_each(|v| want(v, Want::StoreAlias));
    }
    for target in plan.aliases.values() {
        target
            .versions()
            .iter()
            .for_each(|v| want(v, Want::PublishedAlias));
    }
    if let Some(shadow) = &view.traffic.shadow {
        want(&shadow.version, Want::Shadow);
    }
    desired.pins.iter().for_each(|v| want(v, Want::Pinned));
    let draft = |m: &&&VersionManifest| &drafts[&m.version];
    if let Some(newest) = manifests.iter().rev().find(|m| !draft(m).failed()) {
        want(&newest.version, Want::Newest);
        if !draft(&newest).ready() {
            if let Some(serving) = manifests.iter().rev().find(|m| draft(m).ready()) {
                want(&serving.version, Want::NewestReady);
            }
        }
    }
    wanted
}

/// What a plan does with one version.
enum Step {
    Stay,
    To(Listing),
    Load,
}

/// A version's next step [S1-S7]. A version new to the host arrives "not wanted".
fn transition(
    unloaded: bool,
    wanted: bool,
    state: &DraftState,
    running: bool,
    retry: Retry,
) -> Step {
    use NotLoaded::*;
    let not_loaded = |why: &NotLoaded| match state {
        DraftState::Have(Seen::NotLoaded(w)) | DraftState::Now(Listing::NotLoaded(w)) => w == why,
        _ => false,
    };
    let waiting = matches!(
        state,
        DraftState::Have(Seen::NotLoaded(WaitingForStore(_)))
            | DraftState::Now(Listing::NotLoaded(WaitingForStore(_)))
    );
    let any_not_loaded = matches!(
        state,
        DraftState::Have(Seen::NotLoaded(_)) | DraftState::Now(Listing::NotLoaded(_))
    );
    let loading = matches!(
        state,
        DraftState::Have(Seen::Loading) | DraftState::Now(Listing::Loading)
    );
    let ready = matches!(state, DraftState::Have(Seen::Ready));
    if unloaded {
        return if not_loaded(&OnRequest) {
            Step::Stay
        } else {
            Step::To(Listing::NotLoaded(OnRequest))
        };
    }
    if wanted {
        if waiting && retry == Retry::No {
            Step::Stay
        } else if any_not_loaded || (loading && !running) {
            Step::Load
        } else {
            Step::Stay
        }
    } else if ready {
        Step::To(Listing::NotLoaded(Drained))
    } else if not_loaded(&OnRequest) || waiting || (loading && !running) {
        Step::To(Listing::NotLoaded(NotWanted))
    } else {
        Step::Stay
    }
}

#[cfg(test)]
mod tests;
