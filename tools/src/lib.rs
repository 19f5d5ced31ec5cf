//! What sockactor's benchmark and soak tools share (`src/bin/`: `bench`, `tls_bench`,
//! `crowd`, `file_bench`, `soak`, `soak_components`): one copy each of the seeded
//! generator, the checksummed records and their stream check, the /proc probes, argument
//! parsing, the child-process harness, the soaks' checking server and meter, round trips
//! and their percentiles, and the summaries and tables they print.
//!
//! Not a library for users: `publish = false`, and its API is whatever the tools need.

pub mod args;
pub mod child;
pub mod inflate;
pub mod pingpong;
pub mod procfs;
pub mod records;
pub mod report;
pub mod rng;
pub mod soak;
pub mod tls;
