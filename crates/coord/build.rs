//! Generates the etcd v3 gRPC stubs (client and server) from the vendored protos in `proto/`.
//!
//! The protos are compiled by `protox`, a protobuf compiler written in Rust, so building
//! hastack needs no `protoc` binary (the README's first command must work on a machine with
//! only the Rust toolchain and gcc). `tonic-prost-build` turns the descriptor set into code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/etcd/api/mvccpb/kv.proto",
        "proto/etcd/api/authpb/auth.proto",
        "proto/etcd/api/etcdserverpb/rpc.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
