//! The generated protobuf and gRPC types of `proto/sagad/v1`, and nothing else.

#![allow(clippy::all, missing_docs)]

/// Package `sagad.v1`.
pub mod v1 {
    tonic::include_proto!("sagad.v1");
}

/// The encoded `FileDescriptorSet` of our protos, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sagad_descriptor.bin"));
