//! The planner's rules, one row each. A row gives the store's view, what the host lists, the pins,
//! the loads running and whether waiting versions are retried, and what the plan must say.
//!
//! The little language: a view is `1 2 3 prod=2 canary=2:90,3:10 shadow=3 unloaded` (numeric
//! version names have their number as sequence; `name#seq` gives one). What the host lists is
//! `1:R 2:L prod=1`, states being R ready, L loading, F failed, CLASH failed for its name, NW not
//! wanted, DR drained, UR unloaded on request, W waiting for the store; `-` for a model the table
//! does not list.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::registry::store::Aliases;
use crate::registry::traffic::{Percent, Shadow, Split};

const MODEL: &str = "fraud";

fn manifest(token: &str) -> VersionManifest {
    let (name, sequence) = match token.split_once('#') {
        Some((name, seq)) => (name, seq.parse().unwrap()),
        None => (
            token,
            token.parse().expect("a numeric version name or name#seq"),
        ),
    };
    VersionManifest {
        model: MODEL.into(),
        version: name.into(),
        sequence,
        component_sha256: format!("c{sequence}"),
        weights_sha256: None,
        config_sha256: None,
        tests_sha256: None,
        profile_sha256: None,
        limits: None,
        graphs: Default::default(),
    }
}

/// `prod` is short for the alias requests without a version go to.
fn alias(name: &str) -> String {
    if name == "prod" {
        DEFAULT_ALIAS.into()
    } else {
        name.into()
    }
}

fn target(spec: &str) -> AliasTarget {
    if !spec.contains(':') {
        return AliasTarget::version(spec);
    }
    let split = spec
        .split(',')
        .map(|part| {
            let (v, w) = part.split_once(':').unwrap();
            (v.to_owned(), w.parse().unwrap())
        })
        .collect();
    AliasTarget::Split(Split {
        split,
        routing_key_field: None,
    })
}

fn view(spec: &str) -> ModelView {
    let mut view = ModelView::default();
    let mut aliases = Aliases::default();
    for token in spec.split_whitespace() {
        match token.split_once('=') {
            _ if token == "unloaded" => view.unloaded = true,
            Some(("shadow", v)) => {
                view.traffic.shadow = Some(Shadow {
                    version: v.into(),
                    percent: Percent::ALL,
                })
            }
            Some((name, t)) => {
                aliases.current.insert(alias(name), target(t));
            }
            None => view.manifests.push(manifest(token)),
        }
    }
    view.aliases = aliases;
    view
}

fn seen(code: &str, version: &str) -> Seen {
    match code {
        "R" => Seen::Ready,
        "L" => Seen::Loading,
        "F" => Seen::Failed("self-tests: 1 of 2 failed".into()),
        "CLASH" => Seen::Failed(names::clash_reason(MODEL, version)),
        "NW" => Seen::NotLoaded(NotLoaded::NotWanted),
        "DR" => Seen::NotLoaded(NotLoaded::Drained),
        "UR" => Seen::NotLoaded(NotLoaded::OnRequest),
        "W" => Seen::NotLoaded(NotLoaded::WaitingForStore(
            "the store is unreachable".into(),
        )),
        other => panic!("unknown state {other}"),
    }
}

fn current(spec: &str) -> Option<Current> {
    if spec == "-" {
        return None;
    }
    let mut current = Current::default();
    for token in spec.split_whitespace() {
        if let Some((name, t)) = token.split_once('=') {
            if name == "shadow" {
                current.traffic.shadow = Some(Shadow {
                    version: t.into(),
                    percent: Percent::ALL,
                });
            } else {
                current.aliases.insert(alias(name), target(t));
            }
            continue;
        }
        let (version, state) = token.split_once(':').expect("version:STATE");
        let manifest = manifest(version);
        let state = seen(state, &manifest.version);
        current
            .versions
            .insert(manifest.version.clone(), Have { manifest, state });
    }
    Some(current)
}

/// What a row expects of its plan.
#[derive(Debug)]
enum Expect {
    Nothing,
    /// Removes the model; these versions' files go.
    Removes(&'static str),
    /// Loads, in this order.
    Loads(&'static str),
    /// A version's state after the plan.
    State(&'static str, &'static str),
    /// A version keeps its current listing (same value: pool, counters).
    Kept(&'static str),
    /// A version is carried though the store no longer has it.
    Carried(&'static str),
    /// Not listed.
    Absent(&'static str),
    /// An alias as published here.
    Alias(&'static str, &'static str),
    /// An alias held on its published target.
    Held(&'static str),
    /// No alias is held.
    NoneHeld,
    /// Not published here.
    NoAlias(&'static str),
    /// The carried default.
    CarriedDefault(Option<&'static str>),
    /// Wanted for this reason.
    Wanted(&'static str, Want),
    /// Not wanted.
    NotWanted(&'static str),
    /// Drained by this plan.
    Drained(&'static str),
    /// Files collected after the publish (`name#seq`, space-separated; empty: none).
    Gone(&'static str),
    /// Listed failed for its name by this plan (logged).
    NewClash(&'static str),
    /// Whether the published entry stays the same.
    Unchanged(bool),
    /// The traffic policy's shadow.
    Shadowed(&'static str),
}

struct Row {
    rule: &'static str,
    name: &'static str,
    view: &'static str,
    current: &'static str,
    pins: &'static str,
    in_flight: &'static str,
    retry: Retry,
    expect: &'static [Expect],
}

const ROW: Row = Row {
    rule: "",
    name: "",
    view: "",
    current: "-",
    pins: "",
    in_flight: "",
    retry: Retry::No,
    expect: &[],
};

fn names(spec: &str) -> Vec<String> {
    spec.split_whitespace().map(str::to_owned).collect()
}

fn state_after(plan: &ModelPlan, current: &Option<Current>, version: &str) -> Option<Seen> {
    match plan.versions.get(version)? {
        Listed::Keep | Listed::Carry => current
            .as_ref()
            .and_then(|c| c.versions.get(version))
            .map(|h| h.state.clone()),
        Listed::Fresh { state, .. } => Some(state.clone().into()),
    }
}

fn check(row: &Row) {
    let view = view(row.view);
    let current = current(row.current);
    let pins = names(row.pins);
    let in_flight: InFlight = row
        .in_flight
        .split_whitespace()
        .map(|t| {
            let m = manifest(t);
            (m.version, m.sequence)
        })
        .collect();
    let planned = plan(
        MODEL,
        Desired {
            view: &view,
            pins: &pins,
        },
        current.as_ref(),
        &in_flight,
        row.retry,
    );
    let at = format!("[{}] {}: {planned:#?}", row.rule, row.name);
    let manifests =
        |spec: &str| -> Vec<VersionManifest> { spec.split_whitespace().map(manifest).collect() };
    for expect in row.expect {
        let p = match (&planned, expect) {
            (Plan::Nothing, Expect::Nothing) => continue,
            (Plan::Remove { gone }, Expect::Removes(spec)) => {
                let mut gone = gone.clone();
                gone.sort_by_key(|m| m.sequence);
                assert_eq!(gone, manifests(spec), "{at}");
                continue;
            }
            (Plan::Publish(p), _) => p,
            _ => panic!("{expect:?} does not hold: {at}"),
        };
        let listed = |v: &str| p.versions.get(v);
        match expect {
            Expect::Nothing | Expect::Removes(_) => panic!("{expect:?} does not hold: {at}"),
            Expect::Loads(spec) => assert_eq!(p.loads, manifests(spec), "loads: {at}"),
            Expect::State(v, code) => assert_eq!(
                state_after(p, &current, v),
                Some(seen(code, v)),
                "state of {v}: {at}"
            ),
            Expect::Kept(v) => assert_eq!(listed(v), Some(&Listed::Keep), "{v} kept: {at}"),
            Expect::Carried(v) => assert_eq!(listed(v), Some(&Listed::Carry), "{v} carried: {at}"),
            Expect::Absent(v) => assert_eq!(listed(v), None, "{v} absent: {at}"),
            Expect::Alias(a, t) => {
                assert_eq!(
                    p.aliases.get(&alias(a)),
                    Some(&target(t)),
                    "alias {a}: {at}"
                )
            }
            Expect::Held(a) => assert!(p.held.contains_key(&alias(a)), "{a} held: {at}"),
            Expect::NoneHeld => assert!(p.held.is_empty(), "none held: {at}"),
            Expect::NoAlias(a) => assert!(!p.aliases.contains_key(&alias(a)), "no alias {a}: {at}"),
            Expect::CarriedDefault(v) => {
                assert_eq!(p.carried_default.as_deref(), *v, "carried default: {at}")
            }
            Expect::Wanted(v, why) => assert!(
                p.wanted.get(*v).is_some_and(|w| w.contains(why)),
                "{v} wanted as {why:?}: {at}"
            ),
            Expect::NotWanted(v) => assert!(!p.wanted.contains_key(*v), "{v} not wanted: {at}"),
            Expect::Drained(spec) => assert_eq!(p.drained, names(spec), "drained: {at}"),
            Expect::Gone(spec) => {
                let mut gone = p.gone.clone();
                gone.sort_by_key(|m| m.sequence);
                assert_eq!(gone, manifests(spec), "gone: {at}")
            }
            Expect::NewClash(v) => assert_eq!(p.new_clashes, names(v), "new clashes: {at}"),
            Expect::Unchanged(u) => assert_eq!(p.unchanged, *u, "unchanged: {at}"),
            Expect::Shadowed(v) => assert_eq!(
                p.traffic.shadow.as_ref().map(|s| s.version.as_str()),
                Some(*v),
                "shadow: {at}"
            ),
        }
    }
}

use Expect::*;

const ROWS: &[Row] = &[
    // Listing.
    Row {
        rule: "L1",
        name: "an empty store removes the model, pins and carries included",
        view: "",
        current: "1:R 2:L 3:R prod=3",
        pins: "1",
        expect: &[Removes("1 2 3")],
        ..ROW
    },
    Row {
        rule: "L1",
        name: "an empty store for a model never listed is nothing",
        view: "",
        current: "-",
        expect: &[Nothing],
        ..ROW
    },
    Row {
        rule: "W",
        name: "a first view loads the newest only",
        view: "1 2 3",
        current: "-",
        expect: &[
            Loads("3"),
            State("3", "L"),
            State("1", "NW"),
            State("2", "NW"),
            Unchanged(false),
        ],
        ..ROW
    },
    Row {
        rule: "L5",
        name: "the newest is by sequence, not by name or the view's order",
        view: "10#2 9#1",
        current: "-",
        expect: &[Loads("10#2"), State("9", "NW")],
        ..ROW
    },
    Row {
        rule: "L3",
        name: "the same manifest keeps its listing",
        view: "3",
        current: "3:R",
        expect: &[Kept("3"), Drained(""), Gone(""), Unchanged(true), Loads("")],
        ..ROW
    },
    Row {
        rule: "L3",
        name: "a version created again under its name is a new version",
        view: "2#5",
        current: "2#2:R",
        expect: &[State("2", "L"), Loads("2#5"), Gone("2#2"), Drained("2")],
        ..ROW
    },
    Row {
        rule: "L2",
        name: "a version under an alias's name fails for its name and never loads",
        view: "1 canary#2 canary=1",
        current: "-",
        expect: &[
            State("canary", "CLASH"),
            NewClash("canary"),
            Loads("1"),
            Wanted("1", Want::Newest),
        ],
        ..ROW
    },
    Row {
        rule: "L2",
        name: "a clash already listed is kept, not logged again",
        view: "1 canary#2 canary=1",
        current: "1:R canary#2:CLASH canary=1",
        expect: &[Kept("canary"), NewClash(""), Unchanged(true)],
        ..ROW
    },
    Row {
        rule: "L2",
        name: "a clash stays failed for its name when the model is unloaded",
        view: "1 canary#2 canary=1 unloaded",
        current: "1:R canary#2:CLASH canary=1",
        expect: &[Kept("canary"), State("1", "UR")],
        ..ROW
    },
    // Wanted.
    Row {
        rule: "W",
        name: "an alias target and the newest are loaded",
        view: "1 2 3 prod=1",
        current: "-",
        expect: &[
            Wanted("1", Want::StoreAlias),
            Wanted("3", Want::Newest),
            NotWanted("2"),
            State("2", "NW"),
            Loads("1 3"),
        ],
        ..ROW
    },
    Row {
        rule: "R2",
        name: "a weight-0 split member is loaded",
        view: "1 2 3 prod=1:100,2:0",
        current: "-",
        expect: &[Wanted("2", Want::StoreAlias), State("2", "L")],
        ..ROW
    },
    Row {
        rule: "W",
        name: "the shadow is loaded",
        view: "1 2 3 shadow=2",
        current: "-",
        expect: &[Wanted("2", Want::Shadow), State("2", "L"), Shadowed("2")],
        ..ROW
    },
    Row {
        rule: "W",
        name: "a pinned version is loaded",
        view: "1 2",
        current: "-",
        pins: "1",
        expect: &[Wanted("1", Want::Pinned), Loads("1 2")],
        ..ROW
    },
    Row {
        rule: "W",
        name: "a pin on a version the store lacks is ignored",
        view: "1",
        current: "-",
        pins: "9",
        expect: &[Absent("9"), Loads("1")],
        ..ROW
    },
    Row {
        rule: "W",
        name: "while the newest loads the newest ready one stays; older ones drain",
        view: "1 2 3",
        current: "1:R 2:R 3:L",
        in_flight: "3",
        expect: &[
            Wanted("3", Want::Newest),
            Wanted("2", Want::NewestReady),
            State("1", "DR"),
            Drained("1"),
            Kept("2"),
            Kept("3"),
            Loads(""),
        ],
        ..ROW
    },
    Row {
        rule: "S5",
        name: "a newest version that is ready drains the one before",
        view: "2 3",
        current: "2:R 3:R",
        expect: &[State("2", "DR"), Drained("2"), Kept("3")],
        ..ROW
    },
    Row {
        rule: "W",
        name: "a failed newest version leaves the one before serving",
        view: "2 3",
        current: "2:R 3:F",
        expect: &[
            Wanted("2", Want::Newest),
            Kept("2"),
            Kept("3"),
            Loads(""),
            Unchanged(true),
        ],
        ..ROW
    },
    Row {
        rule: "S4",
        name: "when every version failed nothing loads",
        view: "1 2",
        current: "1:F 2:F",
        expect: &[Loads(""), Unchanged(true)],
        ..ROW
    },
    Row {
        rule: "R3",
        name:
            "an alias naming a version the store lacks is published, and nothing is listed for it",
        view: "1 prod=7",
        current: "-",
        expect: &[Absent("7"), Alias("prod", "7"), Loads("1")],
        ..ROW
    },
    // Load-before-swap.
    Row {
        rule: "R1",
        name: "an alias moves once its target is ready",
        view: "1 2 prod=2",
        current: "1:R 2:R prod=1",
        expect: &[Alias("prod", "2"), NoneHeld, State("1", "DR"), Drained("1")],
        ..ROW
    },
    Row {
        rule: "R1",
        name: "an alias holds its published target while the new one loads",
        view: "1 2 prod=2",
        current: "1:R 2:L prod=1",
        in_flight: "2",
        expect: &[
            Alias("prod", "1"),
            Held("prod"),
            Wanted("1", Want::PublishedAlias),
            Wanted("2", Want::StoreAlias),
            Drained(""),
            Loads(""),
        ],
        ..ROW
    },
    Row {
        rule: "R1",
        name: "a held alias starts its new target's load",
        view: "1 2 prod=2",
        current: "1:R 2:NW prod=1",
        expect: &[
            Alias("prod", "1"),
            Held("prod"),
            Loads("2"),
            State("2", "L"),
        ],
        ..ROW
    },
    Row {
        rule: "R3",
        name: "an alias whose published target serves nothing moves at once",
        view: "1 2 prod=2",
        current: "1:F 2:L prod=1",
        in_flight: "2",
        expect: &[Alias("prod", "2"), NoneHeld],
        ..ROW
    },
    Row {
        rule: "R3",
        name: "a new alias is published at once",
        view: "1 2 prod=1",
        current: "1:NW 2:R",
        expect: &[Alias("prod", "1"), NoneHeld, Loads("1")],
        ..ROW
    },
    Row {
        rule: "R5",
        name: "an alias gone from the store goes at once",
        view: "1 2",
        current: "1:R 2:R canary=1",
        expect: &[NoAlias("canary"), State("1", "DR")],
        ..ROW
    },
    Row {
        rule: "R2",
        name: "a split waits for every weighted target",
        view: "1 2 3 prod=2:90,3:10",
        current: "1:R 2:R 3:L prod=1",
        in_flight: "3",
        expect: &[Alias("prod", "1"), Held("prod"), Kept("1"), Kept("2")],
        ..ROW
    },
    Row {
        rule: "R2",
        name: "a split does not wait for a weight-0 member",
        view: "1 2 3 prod=2:100,3:0",
        current: "1:R 2:R 3:L prod=1",
        in_flight: "3",
        expect: &[
            Alias("prod", "2:100,3:0"),
            NoneHeld,
            State("3", "L"),
            Drained("1"),
        ],
        ..ROW
    },
    Row {
        rule: "R2",
        name: "a split with a target failed here stays held",
        view: "1 2 3 prod=2:90,3:10",
        current: "1:R 2:R 3:F prod=1",
        expect: &[Alias("prod", "1"), Held("prod")],
        ..ROW
    },
    Row {
        rule: "R4",
        name: "a held target the store deleted keeps serving until the alias moves",
        view: "2 prod=2",
        current: "1:R 2:L prod=1",
        in_flight: "2",
        expect: &[
            Carried("1"),
            Alias("prod", "1"),
            Wanted("1", Want::PublishedAlias),
            Gone(""),
        ],
        ..ROW
    },
    Row {
        rule: "R4",
        name: "a carried target goes once its successor is ready",
        view: "2 prod=2",
        current: "1:R 2:R prod=1",
        expect: &[Absent("1"), Alias("prod", "2"), Gone("1"), Drained("1")],
        ..ROW
    },
    Row {
        rule: "S7",
        name:
            "a held alias moving on again keeps its published target; the load in between finishes",
        view: "1 2 3 prod=3",
        current: "1:R 2:L 3:NW prod=1",
        in_flight: "2",
        expect: &[
            Alias("prod", "1"),
            Held("prod"),
            Loads("3"),
            Kept("2"),
            NotWanted("2"),
        ],
        ..ROW
    },
    Row {
        rule: "S5",
        name: "a load nothing wants any more finishes, then drains",
        view: "2 3",
        current: "2:R 3:R",
        expect: &[State("2", "DR")],
        ..ROW
    },
    Row {
        rule: "R6",
        name: "the traffic policy is published at once",
        view: "1 2 3 shadow=3",
        current: "1:R 2:R 3:L",
        in_flight: "3",
        expect: &[Shadowed("3"), Unchanged(false)],
        ..ROW
    },
    // A deleted default.
    Row {
        rule: "D1",
        name: "a deleted default keeps answering until its successor is ready",
        view: "2",
        current: "1:R",
        expect: &[
            CarriedDefault(Some("1")),
            Carried("1"),
            Wanted("1", Want::CarriedDefault),
            Loads("2"),
        ],
        ..ROW
    },
    Row {
        rule: "D1",
        name: "an alias learned with its new target still loading carries the old default",
        view: "2 prod=2",
        current: "1:R",
        expect: &[
            Alias("prod", "2"),
            CarriedDefault(Some("1")),
            Carried("1"),
            Loads("2"),
        ],
        ..ROW
    },
    Row {
        rule: "D1",
        name: "the carried default goes once its successor is ready",
        view: "2",
        current: "1:R 2:R",
        expect: &[CarriedDefault(None), Absent("1"), Gone("1"), Drained("1")],
        ..ROW
    },
    Row {
        rule: "D1",
        name: "nothing is carried when every version in the store failed here",
        view: "2",
        current: "1:R 2:F",
        expect: &[CarriedDefault(None), Absent("1"), Gone("1")],
        ..ROW
    },
    Row {
        rule: "D1",
        name: "the default is carried while its successor waits for the store",
        view: "2",
        current: "1:R 2:W",
        expect: &[CarriedDefault(Some("1")), Kept("2"), Loads("")],
        ..ROW
    },
    Row {
        rule: "D1",
        name: "nothing is carried for a model unloaded on request",
        view: "2 unloaded",
        current: "1:R",
        expect: &[CarriedDefault(None), Absent("1"), State("2", "UR")],
        ..ROW
    },
    Row {
        rule: "D1",
        name: "a held split covers the default: nothing more is carried",
        view: "3 prod=3",
        current: "1:R 2:R prod=1:90,2:10",
        expect: &[
            Held("prod"),
            Carried("1"),
            Carried("2"),
            CarriedDefault(None),
            Loads("3"),
        ],
        ..ROW
    },
    // Waiting for the store.
    Row {
        rule: "S3",
        name: "a version waiting for the store is not retried on an ordinary apply",
        view: "2",
        current: "2:W",
        expect: &[Loads(""), Kept("2"), Unchanged(true)],
        ..ROW
    },
    Row {
        rule: "S3",
        name: "a version waiting for the store loads when the store answers",
        view: "2",
        current: "2:W",
        retry: Retry::WaitingForStore,
        expect: &[Loads("2"), State("2", "L")],
        ..ROW
    },
    Row {
        rule: "S6",
        name: "a version nothing wants stops waiting for the store",
        view: "1 2",
        current: "1:W 2:R",
        expect: &[State("1", "NW"), Loads("")],
        ..ROW
    },
    Row {
        rule: "S3",
        name: "a retry loads wanted unloaded versions but never a failed one",
        view: "1 2 3 prod=3 canary=2",
        current: "2:F 3:DR",
        retry: Retry::WaitingForStore,
        expect: &[Loads("3"), State("2", "F")],
        ..ROW
    },
    // Unloaded on request, failures.
    Row {
        rule: "S1",
        name: "unloading relists every version, failures included, and loads nothing",
        view: "1 2 3 4 prod=1 unloaded",
        current: "1:R 2:L 3:F 4:NW",
        in_flight: "2",
        expect: &[
            State("1", "UR"),
            State("2", "UR"),
            State("3", "UR"),
            State("4", "UR"),
            Drained("1"),
            Loads(""),
        ],
        ..ROW
    },
    Row {
        rule: "S1",
        name: "unloading again changes nothing",
        view: "1 2 unloaded",
        current: "1:UR 2:UR",
        expect: &[Kept("1"), Kept("2"), Unchanged(true)],
        ..ROW
    },
    Row {
        rule: "S1",
        name: "an unloaded model loads nothing for pins or aliases",
        view: "1 2 prod=1 unloaded",
        current: "1:UR 2:UR prod=1",
        pins: "1",
        expect: &[NotWanted("1"), Loads("")],
        ..ROW
    },
    Row {
        rule: "S4",
        name: "loading a model again retries what had failed",
        view: "3",
        current: "3:UR",
        expect: &[Loads("3")],
        ..ROW
    },
    Row {
        rule: "S4",
        name: "a failed version is never loaded again while it is wanted",
        view: "1 prod=1",
        current: "1:F prod=1",
        expect: &[Loads(""), Unchanged(true)],
        ..ROW
    },
    // Loads.
    Row {
        rule: "S7",
        name: "a load already running is not started twice",
        view: "2",
        current: "2:L",
        in_flight: "2",
        expect: &[Loads("")],
        ..ROW
    },
    Row {
        rule: "S7",
        name: "a version left loading with no load running is loaded again",
        view: "2",
        current: "2:L",
        expect: &[Loads("2"), Kept("2")],
        ..ROW
    },
    Row {
        rule: "S7",
        name: "a version left loading that nothing wants is not wanted",
        view: "1 2",
        current: "1:L 2:R",
        expect: &[State("1", "NW"), Loads("")],
        ..ROW
    },
    Row {
        rule: "LD1",
        name: "loads start most urgent first: alias targets, pins, the shadow, the newest",
        view: "1 2 3 4 prod=1 shadow=2",
        current: "-",
        pins: "3",
        expect: &[Loads("1 3 2 4")],
        ..ROW
    },
];

#[test]
fn every_rule_of_the_planner() {
    let mut rules = BTreeSet::new();
    for row in ROWS {
        check(row);
        rules.insert(row.rule);
    }
    // Every rule the module doc names has a row.
    for rule in [
        "L1", "L2", "L3", "L5", "R1", "R2", "R3", "R4", "R5", "R6", "D1", "W", "S1", "S3", "S4",
        "S5", "S6", "S7", "LD1",
    ] {
        assert!(rules.contains(rule), "no row for rule {rule}");
    }
}

#[test]
fn a_plan_applied_is_a_fixed_point() {
    // Planning what a plan published, with its loads finished as they started, changes nothing.
    for row in ROWS.iter().filter(|r| !r.view.is_empty()) {
        let view = view(row.view);
        let pins = names(row.pins);
        let desired = Desired {
            view: &view,
            pins: &pins,
        };
        let current = current(row.current);
        let Plan::Publish(first) = plan(
            MODEL,
            desired,
            current.as_ref(),
            &InFlight::new(),
            row.retry,
        ) else {
            continue;
        };
        let loading: InFlight = first
            .loads
            .iter()
            .map(|m| (m.version.clone(), m.sequence))
            .collect();
        let published = Current {
            versions: first
                .versions
                .iter()
                .map(|(name, listed)| {
                    let have = match listed {
                        Listed::Fresh { manifest, state } => Have {
                            manifest: manifest.clone(),
                            state: state.clone().into(),
                        },
                        _ => current.as_ref().unwrap().versions[name].clone(),
                    };
                    (name.clone(), have)
                })
                .collect(),
            aliases: first.aliases.clone(),
            traffic: first.traffic.clone(),
        };
        let Plan::Publish(second) = plan(MODEL, desired, Some(&published), &loading, Retry::No)
        else {
            panic!(
                "[{}] {}: the second plan removes the model",
                row.rule, row.name
            );
        };
        assert!(
            second.loads.is_empty(),
            "[{}] {}: {second:#?}",
            row.rule,
            row.name
        );
        assert!(second.unchanged, "[{}] {}: {second:#?}", row.rule, row.name);
    }
}

#[test]
fn finished_loads() {
    let listed = |spec: &str| current(spec).unwrap().versions.into_values().next();
    let two = manifest("2");
    assert_eq!(loaded(listed("2:L").as_ref(), &two), Loaded::Publish);
    assert_eq!(loaded(listed("2:UR").as_ref(), &two), Loaded::Discard);
    assert_eq!(
        loaded(listed("2#7:L").as_ref(), &two),
        Loaded::DiscardAndCollect
    );
    assert_eq!(loaded(None, &two), Loaded::DiscardAndCollect);
}

#[test]
fn the_default_is_production_while_it_serves_else_the_newest_ready() {
    let ready: BTreeMap<&str, u64> = [("1", 1), ("3", 3)].into();
    let names: Vec<String> = ["1", "2", "3"].map(String::from).to_vec();
    let listed = || names.iter();
    let default = |aliases: &str| {
        let aliases: BTreeMap<String, AliasTarget> = current(aliases).unwrap().aliases;
        default_name(&aliases, |v| ready.get(v).copied(), listed())
    };
    assert_eq!(default("prod=1").as_deref(), Some("1"));
    assert_eq!(default("prod=2").as_deref(), Some("3"));
    assert_eq!(default("prod=1:10,3:90").as_deref(), Some("3"));
    assert_eq!(default("prod=1:10,2:90").as_deref(), Some("1"));
    assert_eq!(default("").as_deref(), Some("3"));
}
