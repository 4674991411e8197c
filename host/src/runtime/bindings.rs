//! Host bindings generated from `wit/` — the same files the guest SDK compiles against.

wasmtime::component::bindgen!({
    world: "ferry-model",
    path: "../wit",
    imports: { default: trappable },
    additional_derives: [PartialEq],
});
