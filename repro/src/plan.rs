//! Variation plans: which non-semantic conditions each run of a
//! reproducibility check changes, and what stays fixed on purpose.
//!
//! A check runs one action N times. [`plan`] gives run 0 the baseline (no
//! variation) and every other run a variation of *every* non-semantic
//! condition at once, so that one check catches as much as it can. When
//! the runs differ, [`one_at_a_time`] gives the trials that find which
//! condition is responsible: each trial changes one [`Aspect`] of the
//! baseline and nothing else.

use hermetic_sandbox::profile::Profile;
use hermetic_sandbox::spec::Variation;
use serde::{Deserialize, Serialize};

/// How far apart (in wall-clock milliseconds) consecutive runs of a plan
/// start, at least: more than a second, so that timestamps with a
/// resolution of one second differ between runs.
pub const START_SPACING_MS: u64 = 1100;

/// An order seed that keeps the order as given (the baseline).
pub const ORDER_AS_GIVEN: u64 = 0;

/// An order seed that reverses the order.
pub const ORDER_REVERSED: u64 = 1;

/// The build path the sandbox mounts the input tree at; never varied.
pub const BUILD_PATH: &str = "/work";

/// Every condition one run of a check varies: the sandbox's part (applied
/// by the helper) and the daemon's part (applied while staging and
/// starting the run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunVariation {
    /// CPU count, clock offsets, pid offset and ASLR, applied by the helper
    /// (`Spec::variation`).
    pub sandbox: Variation,
    /// The order in which the daemon creates the entries of each staged
    /// input directory, as a [`permute`] seed. Readdir order follows
    /// creation order on tmpfs (and btrfs, and small xfs directories), not
    /// on ext4 with hashed directories: stage on tmpfs for this to bite.
    pub staging_order_seed: u64,
    /// The order of the step's environment variables, as a [`permute`]
    /// seed applied to the action's list before the spec is written.
    pub env_order_seed: u64,
    /// Wall-clock delay in milliseconds of this run's start after the
    /// check's start instant (runs started one after another wait until
    /// then if they are early).
    pub delay_ms: u64,
}

/// One non-semantic condition, the unit of [`one_at_a_time`] bisection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aspect {
    /// Nothing varied: a trial that differs like this points at
    /// randomness or a race inside the step itself.
    Nothing,
    /// The wall-clock start time (`delay_ms`).
    StartTime,
    /// The monotonic and boot-time clocks (time namespace offsets).
    Clock,
    /// Process ids (pid namespace offset).
    Pids,
    /// The number of CPUs the step may run on (affinity).
    Cpus,
    /// Address-space layout randomization on or off.
    Aslr,
    /// The creation order of the staged input directory entries.
    StagingOrder,
    /// The order of the environment variables.
    EnvOrder,
}

impl Aspect {
    /// Every aspect, in the order trials are listed.
    pub const ALL: [Aspect; 8] = [
        Aspect::Nothing,
        Aspect::StartTime,
        Aspect::Clock,
        Aspect::Pids,
        Aspect::Cpus,
        Aspect::Aslr,
        Aspect::StagingOrder,
        Aspect::EnvOrder,
    ];

    /// The name used in JSON and text (`start_time`, `cpus`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Aspect::Nothing => "nothing",
            Aspect::StartTime => "start_time",
            Aspect::Clock => "clock",
            Aspect::Pids => "pids",
            Aspect::Cpus => "cpus",
            Aspect::Aslr => "aslr",
            Aspect::StagingOrder => "staging_order",
            Aspect::EnvOrder => "env_order",
        }
    }

    /// What a difference due to this aspect usually means, for the report.
    pub fn hint(self) -> &'static str {
        match self {
            Aspect::Nothing => "differs with nothing varied: randomness or a race in the step",
            Aspect::StartTime => "embeds the wall-clock time (use SOURCE_DATE_EPOCH)",
            Aspect::Clock => "embeds the monotonic or boot-time clock (uptime)",
            Aspect::Pids => "embeds a process id",
            Aspect::Cpus => "depends on the number of CPUs (nproc, parallelism)",
            Aspect::Aslr => "embeds an address (pointer values, hash seeds from addresses)",
            Aspect::StagingOrder => "depends on readdir order (sort directory listings)",
            Aspect::EnvOrder => "depends on the order of environment variables",
        }
    }

    /// Whether `run` differs from `baseline` in this aspect.
    pub fn varied(self, baseline: &RunVariation, run: &RunVariation) -> bool {
        let (b, r) = (&baseline.sandbox, &run.sandbox);
        match self {
            Aspect::Nothing => false,
            Aspect::StartTime => baseline.delay_ms != run.delay_ms,
            Aspect::Clock => b.clock_offset_secs != r.clock_offset_secs,
            Aspect::Pids => b.pid_offset != r.pid_offset,
            Aspect::Cpus => b.cpus != r.cpus,
            Aspect::Aslr => b.no_aslr != r.no_aslr,
            Aspect::StagingOrder => baseline.staging_order_seed != run.staging_order_seed,
            Aspect::EnvOrder => baseline.env_order_seed != run.env_order_seed,
        }
    }
}

impl std::fmt::Display for Aspect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The aspects in which `run` differs from `baseline` (never
/// [`Aspect::Nothing`]).
pub fn aspects_varied(baseline: &RunVariation, run: &RunVariation) -> Vec<Aspect> {
    Aspect::ALL
        .into_iter()
        .filter(|a| a.varied(baseline, run))
        .collect()
}

/// The CPUs this process may run on (at least 1).
pub fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// A plan of `n` runs for this host (see [`plan_for_cpus`]).
pub fn plan(n: usize, seed: u64) -> Vec<RunVariation> {
    plan_for_cpus(n, seed, host_cpus())
}

/// A plan of `n` runs on a host with `cpus` CPUs, the same for the same
/// arguments.
///
/// Run 0 is the baseline: all CPUs, no clock or pid offset, ASLR on, input
/// entries and environment as given, no delay. Every other run varies
/// every condition at once: a CPU count below `cpus` (none when `cpus` is
/// 1), a distinct clock offset and pid offset, ASLR off in odd runs and on
/// (re-randomized) in even ones, the orders reversed in run 1 and shuffled
/// after, and a start [`START_SPACING_MS`] after the previous run's.
pub fn plan_for_cpus(n: usize, seed: u64, cpus: u32) -> Vec<RunVariation> {
    let mut rng = SplitMix64(seed);
    let mut counts: Vec<u32> = (1..cpus).collect();
    permute(&mut counts, rng.next() | 2);
    (0..n)
        .map(|i| {
            if i == 0 {
                return RunVariation::default();
            }
            let i32 = u32::try_from(i).unwrap_or(u32::MAX);
            let order = |rng: &mut SplitMix64| {
                if i == 1 {
                    ORDER_REVERSED
                } else {
                    rng.next() | 2
                }
            };
            RunVariation {
                sandbox: Variation {
                    cpus: (!counts.is_empty()).then(|| counts[(i - 1) % counts.len()]),
                    // Distinct per run, well away from zero.
                    clock_offset_secs: i32
                        .saturating_mul(100_000)
                        .saturating_add((rng.next() % 100_000) as u32),
                    // Below the default pid_max (32768) with room for the
                    // profile's pid limit above the offset.
                    pid_offset: 1000 * (1 + (i32 - 1) % 24) + (rng.next() % 1000) as u32,
                    no_aslr: i % 2 == 1,
                },
                staging_order_seed: order(&mut rng),
                env_order_seed: order(&mut rng),
                delay_ms: START_SPACING_MS.saturating_mul(i as u64),
            }
        })
        .collect()
}

/// The bisection trials for `baseline` on this host (see
/// [`one_at_a_time_for_cpus`]).
pub fn one_at_a_time(baseline: &RunVariation) -> Vec<(Aspect, RunVariation)> {
    one_at_a_time_for_cpus(baseline, host_cpus())
}

/// The bisection trials: for each [`Aspect`], `baseline` with only that
/// aspect changed (clearly: a day of clock offset, ten thousand pids, one
/// CPU instead of all, the order reversed); [`Aspect::Nothing`] first, with
/// nothing changed. The CPU trial is left out on a one-CPU host.
///
/// Each trial is meant to run *concurrently with a control run* of
/// `baseline`, both from one start instant (a driver aligns it just after a
/// wall-clock second boundary), and the trial's outputs to be compared with
/// the control's: the wall clock then differs only in the
/// [`Aspect::StartTime`] trial, whose `delay_ms` is
/// [`START_SPACING_MS`] later. A trial whose outputs differ names its
/// aspect as responsible (see `Bisection::judge`).
pub fn one_at_a_time_for_cpus(baseline: &RunVariation, cpus: u32) -> Vec<(Aspect, RunVariation)> {
    let flip = |seed: u64| {
        if seed == ORDER_AS_GIVEN {
            ORDER_REVERSED
        } else {
            ORDER_AS_GIVEN
        }
    };
    let mut trials = Vec::new();
    for aspect in Aspect::ALL {
        let mut v = baseline.clone();
        let s = &mut v.sandbox;
        match aspect {
            Aspect::Nothing => {}
            Aspect::StartTime => v.delay_ms = baseline.delay_ms + START_SPACING_MS,
            Aspect::Clock => {
                s.clock_offset_secs = if s.clock_offset_secs == 0 { 86_400 } else { 0 }
            }
            Aspect::Pids => s.pid_offset = if s.pid_offset == 0 { 10_000 } else { 0 },
            Aspect::Cpus => {
                if cpus < 2 {
                    continue;
                }
                s.cpus = match s.cpus {
                    Some(1) => None,
                    _ => Some(1),
                };
            }
            Aspect::Aslr => s.no_aslr = !s.no_aslr,
            Aspect::StagingOrder => v.staging_order_seed = flip(v.staging_order_seed),
            Aspect::EnvOrder => v.env_order_seed = flip(v.env_order_seed),
        }
        trials.push((aspect, v));
    }
    trials
}

/// Reorders `items` by `seed`: [`ORDER_AS_GIVEN`] keeps the order,
/// [`ORDER_REVERSED`] reverses it, any other seed shuffles it
/// (Fisher-Yates with SplitMix64), the same for the same seed and length.
pub fn permute<T>(items: &mut [T], seed: u64) {
    match seed {
        ORDER_AS_GIVEN => {}
        ORDER_REVERSED => items.reverse(),
        _ => {
            let mut rng = SplitMix64(seed);
            for i in (1..items.len()).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                items.swap(i, j);
            }
        }
    }
}

/// A condition held fixed on purpose, listed in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedCondition {
    /// What is fixed (`hostname`, `user`, ...).
    pub name: String,
    /// Its value in every run.
    pub value: String,
}

/// What every run holds fixed under `profile`: hostname, user (name,
/// uid:gid, home), build path, locale, TZ, SOURCE_DATE_EPOCH and umask.
pub fn fixed_conditions(profile: &Profile) -> Vec<FixedCondition> {
    let (u, e) = (&profile.user, &profile.environment);
    [
        ("hostname", e.hostname.clone()),
        ("domainname", "(none)".to_owned()),
        ("user", format!("{} ({}:{})", u.name, u.uid, u.gid)),
        ("home", u.home.clone()),
        ("build_path", BUILD_PATH.to_owned()),
        ("locale", format!("LANG={}", e.lang)),
        ("tz", format!("TZ={}", e.tz)),
        (
            "source_date_epoch",
            format!("SOURCE_DATE_EPOCH={}", e.source_date_epoch),
        ),
        ("umask", format!("{:04o}", e.umask)),
    ]
    .into_iter()
    .map(|(name, value)| FixedCondition {
        name: name.to_owned(),
        value,
    })
    .collect()
}

/// SplitMix64: small, fast, and enough to spread seeds (not for secrets).
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_first_then_everything_varied() {
        let p = plan_for_cpus(4, 7, 8);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0], RunVariation::default());
        for (i, run) in p.iter().enumerate().skip(1) {
            let varied = aspects_varied(&p[0], run);
            // ASLR is on in even runs, as in the baseline (re-randomized).
            let expected = if i % 2 == 1 { 7 } else { 6 };
            assert_eq!(varied.len(), expected, "run {i}: {varied:?}");
            let cpus = run.sandbox.cpus.unwrap();
            assert!((1..8).contains(&cpus), "{cpus}");
            assert!(run.delay_ms >= p[i - 1].delay_ms + 1000);
        }
        assert_eq!(p[1].staging_order_seed, ORDER_REVERSED);
        assert_ne!(
            p[1].sandbox.clock_offset_secs,
            p[2].sandbox.clock_offset_secs
        );
        assert_ne!(p[1].sandbox.pid_offset, p[2].sandbox.pid_offset);
        assert_eq!(plan_for_cpus(4, 7, 8), p, "deterministic");
        assert_ne!(plan_for_cpus(4, 8, 8), p, "seeded");
    }

    #[test]
    fn one_cpu_hosts_vary_everything_else() {
        let p = plan_for_cpus(3, 1, 1);
        assert!(p.iter().all(|r| r.sandbox.cpus.is_none()));
        let trials = one_at_a_time_for_cpus(&p[0], 1);
        assert!(trials.iter().all(|(a, _)| *a != Aspect::Cpus));
    }

    #[test]
    fn each_trial_changes_exactly_its_aspect() {
        for baseline in plan_for_cpus(3, 42, 4) {
            let trials = one_at_a_time_for_cpus(&baseline, 4);
            assert_eq!(trials.len(), Aspect::ALL.len());
            for (aspect, v) in trials {
                let varied = aspects_varied(&baseline, &v);
                let expected: Vec<Aspect> = if aspect == Aspect::Nothing {
                    vec![]
                } else {
                    vec![aspect]
                };
                assert_eq!(varied, expected, "{aspect}");
            }
        }
    }

    #[test]
    fn permutations() {
        let base: Vec<u32> = (0..10).collect();
        let mut v = base.clone();
        permute(&mut v, ORDER_AS_GIVEN);
        assert_eq!(v, base);
        permute(&mut v, ORDER_REVERSED);
        assert_eq!(v, (0..10).rev().collect::<Vec<_>>());
        let (mut a, mut b) = (base.clone(), base.clone());
        permute(&mut a, 99);
        permute(&mut b, 99);
        assert_eq!(a, b);
        assert_ne!(a, base);
        a.sort();
        assert_eq!(a, base);
    }

    #[test]
    fn fixed_conditions_come_from_the_profile() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox-profiles");
        let fixed = fixed_conditions(&Profile::load(&dir, "strict").unwrap());
        let names: Vec<&str> = fixed.iter().map(|f| f.name.as_str()).collect();
        for n in [
            "hostname",
            "user",
            "build_path",
            "locale",
            "tz",
            "source_date_epoch",
            "umask",
        ] {
            assert!(names.contains(&n), "{n}");
        }
        assert!(fixed.iter().any(|f| f.value == "TZ=UTC"));
    }
}
