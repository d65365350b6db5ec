//! The corpus (`repro/corpus/`) through the real sandbox helper: each
//! non-deterministic case is found with the right file named, each
//! deterministic one passes under every variation, and one-at-a-time
//! bisection names the responsible variation.
//!
//! Needs root (the helper maps the step to an unprivileged host range and
//! the staged inputs are given to it), busybox-static and a built helper
//! (`cargo build -p hermetic-sandbox` into the same target directory).
//! Without root it prints `SKIP:`; with `CI=true` it fails instead.
//!
//! Inputs are staged on tmpfs (`/dev/shm`), where readdir returns entries
//! in creation order, so that the staging-order variation bites as it does
//! in the daemon.

mod harness;

use std::path::Path;

use hermetic_repro::compare::Change;
use hermetic_repro::plan::{self, Aspect};
use hermetic_repro::{Report, Tree};

use harness::{Case, Host, corpus_dir};

/// The seed of every check's plan (fixed: a failure can be replayed).
const SEED: u64 = 0x5eed_0007;

fn run_case(name: &str) {
    let Some(host) = Host::get() else { return };
    let _serial = host.lock();
    let case = Case::load(name);
    if case.rootfs == harness::Rootfs::Toolchain && host.toolchain().is_none() {
        return;
    }
    let plan = plan::plan(case.runs, SEED);
    let dir = host.case_dir(name);
    let start = std::time::Instant::now();
    let trees: Vec<Tree> = plan
        .iter()
        .enumerate()
        .map(|(i, v)| {
            // Runs start no earlier than their delay after the check's start.
            let due = std::time::Duration::from_millis(v.delay_ms);
            std::thread::sleep(due.saturating_sub(start.elapsed()));
            let out = host.execute(&case, v, &dir.join(format!("run-{i}")));
            Tree::read(&out).expect("read outputs")
        })
        .collect();
    let mut report = Report::new(&plan, &trees, plan::fixed_conditions(&host.profile))
        .expect("compare the runs");
    eprintln!("{}", report.render_text());

    let e = &case.expect;
    assert_eq!(
        report.is_reproducible(),
        e.reproducible,
        "{name}: verdict\n{}",
        report.render_text()
    );
    assert_eq!(report.differing_paths, e.differs, "{name}: differing paths");
    for path in &e.differs {
        // Each differing file is described: content, first offset, context.
        let detail = report
            .comparisons
            .iter()
            .flat_map(|c| &c.differences)
            .find_map(|d| match &d.change {
                Change::Content { detail, .. } if &d.path == path => detail.as_ref(),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name}: no content detail for {path}"));
        assert!(
            !detail.first_difference.run.after.is_empty()
                || detail.first_difference.run_size == detail.first_difference.offset
        );
        if let Some(member) = &e.first_member {
            let archive = detail.archive.as_ref().expect("an archive comparison");
            let first = archive
                .first_differing
                .as_ref()
                .expect("a differing member");
            assert_eq!(&first.name, member, "{name}: first differing member");
        }
    }
    let text = report.render_text();
    for path in &e.differs {
        assert!(
            text.contains(path.as_str()),
            "{name}: {path} not in the text"
        );
    }

    if let Some(expected) = &e.responsible {
        if expected.contains(&Aspect::Cpus) && plan::host_cpus() < 2 {
            eprintln!("SKIP: {name}: bisection of the CPU count needs two CPUs");
            host.remove_case_dir(&dir);
            return;
        }
        let bisection = host.bisect(&case, &plan[0], &dir.join("bisect"));
        assert_eq!(
            &bisection.responsible, expected,
            "{name}: responsible variations: {bisection:#?}"
        );
        for path in &e.differs {
            assert_eq!(
                bisection.by_path.get(path),
                Some(expected),
                "{name}: {path}"
            );
        }
        report.bisection = Some(bisection);
        let text = report.render_text();
        eprintln!("{text}");
        let first = expected[0];
        assert!(
            text.contains(&format!("{}: {first}", e.differs[0])),
            "{name}: the text names the responsible variation\n{text}"
        );
        // The predicate is the report's JSON and reads back.
        let back: Report = serde_json::from_value(hermetic_repro::predicate(&report)).unwrap();
        assert_eq!(back, report);
    }
    host.remove_case_dir(&dir);
}

macro_rules! corpus_cases {
    ($($name:ident),* $(,)?) => {
        /// Every case in the corpus has a test here.
        const CASES: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                run_case(stringify!($name));
            }
        )*
    };
}

corpus_cases!(
    date,
    random,
    pid,
    nproc,
    uptime,
    readdir,
    make_race,
    tar_mtime,
    c_multifile,
    sorted,
);

#[test]
fn every_corpus_case_is_tested_and_loads() {
    let mut found: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("case.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut listed: Vec<String> = CASES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed);
    for name in CASES {
        let case = Case::load(name);
        assert!(case.runs >= 2, "{name}");
        assert_eq!(
            case.expect.reproducible,
            case.expect.differs.is_empty(),
            "{name}"
        );
        assert!(Path::new(&corpus_dir().join(name).join(&case.inputs)).is_dir());
    }
}
