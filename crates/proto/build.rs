//! Compiles `proto/cloudai/v1/*.proto` with a vendored protoc, so no system install is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto").canonicalize()?;
    let file = root.join("cloudai/v1/cloudai.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Our codec: bad input is INVALID_ARGUMENT, not prost's INTERNAL (src/codec.rs).
    tonic_prost_build::configure().codec_path("crate::codec::Codec").compile_with_config(
        config,
        &[file],
        &[root],
    )?;
    Ok(())
}
