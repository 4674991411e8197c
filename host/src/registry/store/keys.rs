//! Where each document lives in the store (the layout in [`super`]).

pub(super) const CHANGES: &str = "changes.json";

pub(super) fn manifest_key(model: &str, version: &str) -> String {
    format!("models/{model}/{version}.json")
}
pub(super) fn aliases_key(model: &str) -> String {
    format!("models/{model}/aliases.json")
}
pub(super) fn traffic_key(model: &str) -> String {
    format!("models/{model}/traffic.json")
}
pub(super) fn unloaded_key(model: &str) -> String {
    format!("models/{model}/unloaded")
}
pub(super) fn host_key(host: &str) -> String {
    format!("hosts/{host}.json")
}
