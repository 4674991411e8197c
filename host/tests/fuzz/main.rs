//! Property-based fuzz targets for what a caller, an uploader or a store can hand the host: the OIP
//! JSON tensor parser, the binary tensor extension, multipart version uploads, and the manifests,
//! alias and traffic documents read from a store. Each target generates structured but hostile
//! input, drives the real code (the HTTP ones through the real router, in-process), and checks that
//! the host never panics, refuses with a clear 4xx where an independent oracle says it must, accepts
//! where it must, and allocates in proportion to the request rather than to what it declares.
//!
//! Case counts are bounded for CI; `FERRY_FUZZ_CASES=N` runs N cases per target, `FERRY_FUZZ_SEED`
//! picks the seed (a number, or `random`). Each target prints its count to the test's stderr
//! directly (not through the captured `eprintln!`), so the CI log shows it. See `docs/fuzzing.md`.

mod alloc;
mod app;
mod multipart;
mod oip_binary;
mod oip_json;
mod oracle;
mod runner;
mod store_docs;

pub use runner::{cases, run, say, Tally};

#[global_allocator]
static COUNTING: alloc::Counting = alloc::Counting;
