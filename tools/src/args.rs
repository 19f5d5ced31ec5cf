//! Command-line arguments: a cursor over them that takes a flag's value, and the way a
//! soak answers arguments it cannot use.

use std::process::ExitCode;
use std::str::FromStr;

/// The arguments after the program's name, one at a time.
pub struct Args(std::vec::IntoIter<String>);

impl Args {
    /// This process's arguments, without the program's name.
    pub fn from_env() -> Args {
        Args::new(std::env::args().skip(1))
    }

    pub fn new(args: impl IntoIterator<Item = String>) -> Args {
        Args(args.into_iter().collect::<Vec<_>>().into_iter())
    }

    /// The value of flag `name` (the next argument).
    pub fn value(&mut self, name: &str) -> Result<String, String> {
        self.0.next().ok_or(format!("{name} needs a value"))
    }

    /// The value of flag `name` as a number (`_` allowed between digits).
    pub fn number<T: FromStr>(&mut self, name: &str) -> Result<T, String> {
        number(&self.value(name)?)
    }

    /// The value of flag `name` as a probability.
    pub fn probability(&mut self, name: &str) -> Result<f64, String> {
        let v = self.value(name)?;
        v.parse().map_err(|_| format!("bad probability {v}"))
    }

    /// The next argument parsed as a `T`, if there is one and it parses.
    pub fn parsed<T: FromStr>(&mut self) -> Option<T> {
        self.0.next().and_then(|v| v.parse().ok())
    }
}

impl Iterator for Args {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        self.0.next()
    }
}

/// A number, with `_` allowed between digits (`10_000`).
pub fn number<T: FromStr>(v: &str) -> Result<T, String> {
    v.replace('_', "")
        .parse()
        .map_err(|_| format!("bad number {v}"))
}

/// What an argument no flag knows is.
pub fn unknown(arg: &str) -> String {
    format!("unknown argument {arg}")
}

/// Arguments that did not parse: prints `tool: why` on stderr (nothing for `--help`,
/// whose `why` is empty) and the usage; answers the exit status for bad arguments, 2.
pub fn bad_arguments(tool: &str, why: &str, usage: &str) -> ExitCode {
    if !why.is_empty() {
        eprintln!("{tool}: {why}");
    }
    eprintln!("{usage}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_take_their_values() {
        let mut args = Args::new(["--n", "10_000", "--p", "0.5", "--x"].map(String::from));
        assert_eq!(args.next().as_deref(), Some("--n"));
        assert_eq!(args.number::<u64>("--n"), Ok(10_000));
        assert_eq!(args.next().as_deref(), Some("--p"));
        assert_eq!(args.probability("--p"), Ok(0.5));
        assert_eq!(args.next().as_deref(), Some("--x"));
        assert_eq!(args.value("--x"), Err("--x needs a value".into()));
        assert_eq!(number::<u32>("1x"), Err("bad number 1x".into()));
    }
}
