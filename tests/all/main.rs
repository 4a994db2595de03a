//! tensor-blob integration tests: one binary, a module per topic, real
//! wasm components (built by guest/artifacts), real store directories.

mod common;

mod blobstore;
mod cli;
mod concurrent;
mod crash;
mod disk_faults;
mod fixtures;
mod gc;
mod hostile_guest;
mod hostile_plugin;
mod object_store;
mod pipeline;
mod plugin;
mod plugin_queries;
mod python;
mod quota;
mod roundtrip;
mod sharing;
mod simulation;
mod streams;
