//! Traffic beyond "this request, this version": weighted aliases picked by routing key ([`split`]),
//! copies of requests for a candidate version ([`shadow`]), and the prediction log ([`log`]). The
//! policies are data in the store (`registry::TrafficPolicy`, `registry::AliasTarget`), read alike by
//! every host; this is what a host does with them.

pub mod compare;
pub mod log;
pub mod shadow;
pub mod split;
