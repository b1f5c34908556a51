//! The SSE-IO conformance suite, run against every adapter's harness binary.
//!
//! Each case is written once in `cases/` as `async fn case(h: &Harness)` and listed in its
//! module's table with what it needs (`cases/registry.rs`); this target makes one trial per
//! adapter and case, named `<adapter>::<case>` (so a failure reads `hyper::fetch_holds_back`),
//! each starting its own harness process, and one per cluster case and cluster it runs on
//! (`cluster_redis::presence_counts_every_node`), each on a fresh cluster, and one per harness
//! binary and bad `SSEIO_SERVE` (`cases/startup.rs`). `libtest-mimic` runs
//! them as libtest would, with the same options and summary line.
//!
//! With `SERVER_URL=http://host:port` set, no harness is started: every case runs against that
//! server instead, except those that need what only a harness started by the suite can give,
//! which are listed as ignored (see `conformance-tests/README.md`).

pub mod cases;

use cases::cluster::{self, Topology};
use cases::registry::{self, ADAPTERS};

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    registry::show_output(args.nocapture);
    let mut trials = Vec::new();
    for adapter in ADAPTERS {
        trials.extend(cases::all().map(|case| registry::adapter_trial(adapter, case)));
    }
    for topology in Topology::ALL {
        let cases = cluster::CASES
            .iter()
            .filter(|case| case.on.contains(&topology));
        trials.extend(cases.map(|case| topology.trial(case)));
    }
    trials.extend(cases::startup::trials());
    // In libtest's order, by name.
    trials.sort_by(|a, b| a.name().cmp(b.name()));
    libtest_mimic::run(&args, trials).exit();
}
