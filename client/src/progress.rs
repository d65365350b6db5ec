//! Progress on stderr: an indicatif bar on a terminal (bytes uploaded,
//! stage, elapsed), plain timestamped lines otherwise, nothing with
//! `--json`.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An indicatif bar.
    Bar,
    /// Plain lines.
    Plain,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// The mode for this process: quiet with `--json`, a bar when stderr is
    /// a terminal, else plain lines.
    pub fn detect(json: bool) -> Mode {
        if json {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Plain
        }
    }
}

/// The progress of one run.
#[derive(Debug)]
pub struct Progress {
    mode: Mode,
    start: Instant,
    bar: Option<ProgressBar>,
    uploaded: AtomicU64,
    stage: Mutex<String>,
}

impl Progress {
    /// Starts showing progress.
    pub fn new(mode: Mode) -> Self {
        let bar = (mode == Mode::Bar).then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                    .expect("the template is valid"),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress {
            mode,
            start: Instant::now(),
            bar,
            uploaded: AtomicU64::new(0),
            stage: Mutex::new(String::new()),
        }
    }

    /// How progress is shown.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn line(&self, text: &str) {
        if self.mode == Mode::Plain {
            eprintln!("[{:>6.1}s] {text}", self.start.elapsed().as_secs_f64());
        }
    }

    /// A new stage (hashing, uploading, queued, executing, downloading).
    pub fn stage(&self, text: &str) {
        {
            let mut s = self.stage.lock().unwrap_or_else(|p| p.into_inner());
            if *s == text {
                return;
            }
            text.clone_into(&mut s);
        }
        self.line(text);
        if let Some(b) = &self.bar {
            b.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                    .expect("the template is valid"),
            );
            b.set_length(0);
            b.set_message(text.to_owned());
        }
    }

    /// Uploading `count` blobs, `bytes` in all.
    pub fn upload_start(&self, count: usize, bytes: u64, present: usize) {
        let text = format!(
            "uploading {count} blob(s), {} ({present} already stored)",
            HumanBytes(bytes)
        );
        *self.stage.lock().unwrap_or_else(|p| p.into_inner()) = text.clone();
        self.line(&text);
        if let Some(b) = &self.bar {
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed}] uploading {bar:30} {bytes}/{total_bytes} {msg}",
                )
                .expect("the template is valid"),
            );
            b.set_length(bytes);
            b.set_position(0);
            b.set_message(format!("{count} blob(s)"));
        }
    }

    /// `n` more bytes uploaded.
    pub fn uploaded(&self, n: u64) {
        self.uploaded.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// The upload is over.
    pub fn upload_done(&self) {
        self.line(&format!(
            "uploaded {}",
            HumanBytes(self.uploaded.load(Ordering::Relaxed))
        ));
    }

    /// Bytes uploaded so far.
    pub fn bytes_uploaded(&self) -> u64 {
        self.uploaded.load(Ordering::Relaxed)
    }

    /// Stops showing progress (before the result is printed).
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
