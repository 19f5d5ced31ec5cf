//! Running this binary again as a child of itself (a fresh process per measurement, or a
//! second process for one side of a run), and the one-line reports children print.

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// This binary, to run as a child of itself.
pub fn this_binary() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("current_exe: {e}"))
}

/// Where a child's stderr goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stderr {
    /// Kept, for [`Finished::stderr`].
    Capture,
    /// Straight to this process's stderr.
    Inherit,
}

/// A child that ended (or was killed).
#[derive(Debug)]
pub struct Finished {
    /// `None`: killed at the time limit.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    /// Empty unless captured.
    pub stderr: String,
}

impl Finished {
    /// The first line of stdout that starts with `prefix`.
    pub fn line(&self, prefix: &str) -> Option<&str> {
        self.stdout.lines().find(|l| l.starts_with(prefix))
    }

    /// The last `n` lines of stderr, joined with ` | `.
    pub fn stderr_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        lines[lines.len().saturating_sub(n)..].join(" | ")
    }
}

/// Runs `cmd` to its end with no stdin and stdout captured, killing it after `limit`
/// (if any).
pub fn run(cmd: &mut Command, stderr: Stderr, limit: Option<Duration>) -> io::Result<Finished> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(match stderr {
            Stderr::Capture => Stdio::piped(),
            Stderr::Inherit => Stdio::inherit(),
        })
        .spawn()?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
    );
    let errs = drain(
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    );
    let status = match limit {
        None => Some(child.wait()?),
        Some(limit) => {
            let deadline = Instant::now() + limit;
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                }
            }
        }
    };
    Ok(Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: errs.join().unwrap_or_default(),
    })
}

/// The `key=value` fields of a report line (after its prefix); `None` for a word without
/// `=`.
pub fn fields(line: &str) -> impl Iterator<Item = Option<(&str, &str)>> {
    line.split_whitespace().map(|field| field.rsplit_once('='))
}
