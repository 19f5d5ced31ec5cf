//! The seeded network simulation (`tests/support/sim.rs`): listeners, stalling and
//! aborting servers and closing, aborting or vanishing clients over a `SimNetwork` with
//! latency, small buffers, partial accepts, resets, partitions and full accept queues, in
//! paused time. Every write is answered once and truthfully, the servers read exactly
//! what the answers report, drain deadlines hold, and nothing is left open. The same
//! seed gives the same run. A failing seed prints the command that replays it.

use crate::support::sim::{run_seed, SimReport};

/// Seeds run by `cargo test` (the `sim` tool runs any number).
const SEEDS: u64 = 200;

fn verdict(report: &SimReport) -> String {
    format!(
        "seed {} failed: {:?}\nreplay: {}",
        report.seed,
        report.failures,
        report.replay_command()
    )
}

#[test]
fn a_fixed_set_of_seeds_keeps_every_invariant() {
    let mut connected = 0;
    let mut resets = 0;
    let mut refused = 0;
    let mut bytes = 0;
    for seed in 0..SEEDS {
        let report = run_seed(seed);
        assert!(report.passed(), "{}", verdict(&report));
        connected += report.connected;
        resets += report.resets;
        refused += report.refused;
        bytes += report.bytes_checked;
    }
    // The seeds reach what they are meant to: connections, resets, refusals, bytes.
    assert!(connected > SEEDS as usize, "{connected} connections");
    assert!(resets > 0, "no reset in {SEEDS} seeds");
    assert!(refused > 0, "no refused connect in {SEEDS} seeds");
    assert!(bytes > 1_000_000, "{bytes} bytes checked");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    for seed in [7, 1234, 99_991] {
        let first = run_seed(seed);
        let second = run_seed(seed);
        assert!(first.passed(), "{}", verdict(&first));
        assert_eq!(
            (first.trace, first.ops, first.writes, first.bytes_checked),
            (
                second.trace,
                second.ops,
                second.writes,
                second.bytes_checked
            ),
            "seed {seed} ran differently the second time"
        );
        assert!(first.ops > 0);
    }
}
