//! What a caught panic said: the text of its payload (`panic!("...")` gives a `&str` or a `String`).

use std::any::Any;

/// The panic's message, or "(no message)".
pub fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
