//! Modules of the `sagad` binary (not the library).

pub mod demo;
