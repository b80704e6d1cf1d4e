//! Compiles the protos with `protox` (a pure-Rust protobuf compiler), so the
//! crate builds on a machine without a system `protoc`. The descriptor set is
//! also written to `OUT_DIR` for gRPC server reflection.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/sagad/v1/coordinator.proto",
        "proto/sagad/v1/participant.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("sagad_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    compile_example_protos(&out_dir)?;
    Ok(())
}

/// The example participant (`cargo run --example payments`) serves its own
/// `shop.Payments` service over sagad's message types. Its code goes to
/// `OUT_DIR/shop/` and refers to the library's types instead of generating
/// them a second time.
fn compile_example_protos(out_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let proto = "examples/proto/shop/payments.proto";
    println!("cargo:rerun-if-changed={proto}");
    let mut fds = protox::compile([proto], ["proto", "examples/proto"])?;
    fds.file.retain(|file| file.package() == "shop");
    let dir = out_dir.join("shop");
    fs::create_dir_all(&dir)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&dir)
        .extern_path(".sagad.v1", "::sagad::proto::v1")
        .compile_fds(fds)?;
    Ok(())
}
