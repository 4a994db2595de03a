//! tensor-blob integration tests: one binary, a module per topic, real
//! wasm components (built by guest/artifacts), real store directories.

mod common;

mod cli;
mod disk_faults;
mod crash;
mod hostile_guest;
mod hostile_plugin;
mod pipeline;
mod plugin;
mod roundtrip;
mod sharing;
mod simulation;
