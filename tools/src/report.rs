//! What the tools print: a soak's summary (lines, checks, `PASS` or `FAIL`), the
//! benchmarks' markdown tables, and the medians and spreads in their cells.

use std::fmt::Display;

/// A soak's summary: what ran, the counts, and the checks.
pub struct Report {
    tool: &'static str,
    title: String,
    seed: u64,
    lines: Vec<(&'static str, String)>,
    checks: Vec<(String, bool)>,
}

impl Report {
    /// Printed under `== sockactor {tool} ({title}; seed {seed})`.
    pub fn new(tool: &'static str, title: String, seed: u64) -> Report {
        Report {
            tool,
            title,
            seed,
            lines: Vec::new(),
            checks: Vec::new(),
        }
    }

    /// A `key: value` line.
    pub fn line(&mut self, key: &'static str, value: String) {
        self.lines.push((key, value));
    }

    /// A check and whether it held.
    pub fn check(&mut self, what: String, ok: bool) {
        self.checks.push((what, ok));
    }

    /// The `errors by kind` line: `kind: count, …`, or `none`.
    pub fn errors<K: Display, N: Display>(&mut self, errors: impl IntoIterator<Item = (K, N)>) {
        let errors: Vec<String> = errors
            .into_iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        let text = if errors.is_empty() {
            "none".to_string()
        } else {
            errors.join(", ")
        };
        self.line("errors by kind", text);
    }

    /// Prints the summary: the lines, `[ok]` or `[FAIL]` per check, and `PASS` or `FAIL`;
    /// answers whether every check held.
    pub fn print(&self) -> bool {
        println!(
            "== sockactor {} ({}; seed {})",
            self.tool, self.title, self.seed
        );
        for (key, value) in &self.lines {
            println!("{key:<15}: {value}");
        }
        let mut pass = true;
        for (what, ok) in &self.checks {
            println!("  [{}] {what}", if *ok { "ok" } else { "FAIL" });
            pass &= ok;
        }
        println!("{}", if pass { "PASS" } else { "FAIL" });
        pass
    }
}

/// A markdown table column's alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Prints a markdown table's header row and its alignment row.
pub fn table_header(columns: &[(&str, Align)]) {
    let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
    table_row(&names);
    let rule: String = columns
        .iter()
        .map(|c| match c.1 {
            Align::Left => "---|",
            Align::Right => "---:|",
        })
        .collect();
    println!("|{rule}");
}

/// Prints one markdown table row.
pub fn table_row<S: AsRef<str>>(cells: &[S]) {
    let cells: Vec<&str> = cells.iter().map(AsRef::as_ref).collect();
    println!("| {} |", cells.join(" | "));
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The median (of an even count, the mean of the middle two); `None` for no values.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let v = sorted(v);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The upper median: the value at half the count in sorted order (of an even count, the
/// higher of the middle two); `None` for no values.
pub fn upper_median(v: &[f64]) -> Option<f64> {
    sorted(v).get(v.len() / 2).copied()
}

/// `median (min..max)` of several values, `median` of one, each formatted by `fmt`;
/// `None` for no values.
pub fn spread(
    v: &[f64],
    median: fn(&[f64]) -> Option<f64>,
    fmt: impl Fn(f64) -> String,
) -> Option<String> {
    let m = median(v)?;
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(if v.len() > 1 {
        format!("{} ({}..{})", fmt(m), fmt(lo), fmt(hi))
    } else {
        fmt(m)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(upper_median(&[4.0, 1.0, 2.0, 3.0]), Some(3.0));
        assert_eq!(upper_median(&[]), None);
        let fmt = |v: f64| format!("{v:.0}");
        assert_eq!(spread(&[5.0], median, fmt), Some("5".into()));
        assert_eq!(
            spread(&[3.0, 9.0, 5.0], median, fmt),
            Some("5 (3..9)".into())
        );
        assert_eq!(spread(&[], median, fmt), None);
    }
}
