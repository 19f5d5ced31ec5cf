//! Runs the seeded network simulation (`tests/support/sim.rs`, the same code `cargo
//! test` runs on fixed seeds) over many seeds and prints PASS or FAIL with the first
//! failing seed and the command that replays it.
//!
//! ```text
//! sim [--seeds N] [--from S]     # seeds S..S+N (default 0..1000)
//! sim --seed S                   # one seed, with its figures
//! ```

#[path = "../../../tests/support/sim.rs"]
mod sim;

use std::process::ExitCode;
use std::time::Instant;

use sockactor_tools::args::Args;

fn main() -> ExitCode {
    let mut args = Args::from_env();
    let (mut from, mut seeds, mut one) = (0u64, 1000u64, None);
    while let Some(flag) = args.next() {
        let parsed = match flag.as_str() {
            "--from" => args.number("--from").map(|v| from = v),
            "--seeds" => args.number("--seeds").map(|v| seeds = v),
            "--seed" => args.number("--seed").map(|v| one = Some(v)),
            "--help" | "-h" => {
                println!("sim [--seeds N] [--from S] | sim --seed S");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {other}")),
        };
        if let Err(e) = parsed {
            eprintln!("sim: {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(seed) = one {
        let report = sim::run_seed(seed);
        println!(
            "seed {seed}: {} clients, {} connected, {} writes ({} Ok), {} bytes checked, \
             {} network operations, {} resets, {} refused connects, {:.1} s of virtual time, \
             {} datagrams received, {} lost by the network, trace {:016x}; failed answers: {:?}",
            report.clients,
            report.connected,
            report.writes,
            report.ok_writes,
            report.bytes_checked,
            report.ops,
            report.resets,
            report.refused,
            report.virtual_secs,
            report.datagrams,
            report.datagrams_lost,
            report.trace,
            report.errors
        );
        return verdict(&[report]);
    }
    let started = Instant::now();
    let mut reports = Vec::new();
    let (mut writes, mut bytes, mut resets, mut refused, mut connected) = (0, 0, 0, 0, 0);
    let (mut datagrams, mut lost, mut tls, mut tls_bytes) = (0, 0, 0, 0);
    for seed in from..from.saturating_add(seeds) {
        let report = sim::run_seed(seed);
        writes += report.writes;
        bytes += report.bytes_checked;
        resets += report.resets;
        refused += report.refused;
        connected += report.connected;
        datagrams += report.datagrams;
        tls += report.tls_connections;
        tls_bytes += report.tls_bytes;
        lost += report.datagrams_lost;
        let failed = !report.passed();
        reports.push(report);
        if failed {
            break;
        }
    }
    println!(
        "{} seeds from {from} in {:.1} s: {connected} connections, {writes} writes, \
         {bytes} bytes checked, {resets} resets, {refused} refused connects, \
         {datagrams} datagrams received and {lost} lost; {tls} connections through TLS \
         ({tls_bytes} bytes)",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    verdict(&reports)
}

fn verdict(reports: &[sim::SimReport]) -> ExitCode {
    match reports.iter().find(|r| !r.passed()) {
        None => {
            println!("PASS");
            ExitCode::SUCCESS
        }
        Some(r) => {
            println!("FAIL: seed {}", r.seed);
            for f in &r.failures {
                println!("  {f}");
            }
            println!("replay: {}", r.replay_command());
            ExitCode::FAILURE
        }
    }
}
