//! Generates the gRPC service (server side only) from `proto/inference.proto`. protoc comes from the
//! `protoc-bin-vendored` crate, so a fresh clone needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/inference.proto");
    // The build script is single-threaded; prost-build reads PROTOC after this.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(false)
        .build_transport(false)
        // The raw tensor bytes of a request stay slices of the received message, not copies.
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .compile_protos(&["proto/inference.proto"], &["proto"])?;
    Ok(())
}
