//! The one table the runner prints: a row per measured figure, with its
//! baseline from the same run, its target and whether the target was met.

use std::fmt::Write as _;

use super::stats::Summary;

/// Which figure of a row a target is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    /// The median.
    Median,
    /// The 99th percentile.
    P99,
    /// The median divided by the baseline.
    Ratio,
    /// The median minus the baseline (same unit): for a figure that must
    /// stay within a fixed amount of its baseline.
    Excess,
}

/// A target: a figure and the bound it must stay within.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    /// The figure compared.
    pub figure: Figure,
    /// The bound.
    pub limit: f64,
    /// True: the figure must not exceed `limit`; false: it must reach it.
    pub at_most: bool,
}

impl Target {
    /// The median must not exceed `limit`.
    pub fn median_below(limit: f64) -> Self {
        Target {
            figure: Figure::Median,
            limit,
            at_most: true,
        }
    }

    /// The median must reach `limit`.
    pub fn median_above(limit: f64) -> Self {
        Target {
            figure: Figure::Median,
            limit,
            at_most: false,
        }
    }

    /// The p99 must not exceed `limit`.
    pub fn p99_below(limit: f64) -> Self {
        Target {
            figure: Figure::P99,
            limit,
            at_most: true,
        }
    }

    /// median / baseline must reach `limit`.
    pub fn ratio_above(limit: f64) -> Self {
        Target {
            figure: Figure::Ratio,
            limit,
            at_most: false,
        }
    }

    /// median / baseline must not exceed `limit`.
    pub fn ratio_below(limit: f64) -> Self {
        Target {
            figure: Figure::Ratio,
            limit,
            at_most: true,
        }
    }

    /// median - baseline must not exceed `limit` (in the row's unit).
    pub fn excess_below(limit: f64) -> Self {
        Target {
            figure: Figure::Excess,
            limit,
            at_most: true,
        }
    }

    fn describe(&self, unit: &str) -> String {
        let op = if self.at_most { "<=" } else { ">=" };
        match self.figure {
            Figure::Median => format!("median {op} {} {unit}", num(self.limit)),
            Figure::P99 => format!("p99 {op} {} {unit}", num(self.limit)),
            Figure::Ratio => format!("ratio {op} {}", num(self.limit)),
            Figure::Excess => format!("median - baseline {op} {} {unit}", num(self.limit)),
        }
    }
}

/// What came of measuring a figure.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Samples were taken.
    Measured(Summary),
    /// The product cannot be measured this way yet; says why.
    NotAvailable(String),
    /// The scenario failed to run; says why. Makes the runner exit non-zero.
    Failed(String),
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The scenario (as given to `--only`).
    pub scenario: String,
    /// What is measured.
    pub metric: String,
    /// The unit of median, p99, min, max and baseline.
    pub unit: &'static str,
    /// The samples' summary, or why there is none.
    pub outcome: Outcome,
    /// The same figure for the baseline, measured in the same run.
    pub baseline: Option<f64>,
    /// The target, if the issues set one.
    pub target: Option<Target>,
}

impl Row {
    /// A row from samples (a failure if there are none).
    pub fn measured(scenario: &str, metric: &str, unit: &'static str, samples: &[f64]) -> Self {
        let outcome = match Summary::of(samples) {
            Some(s) => Outcome::Measured(s),
            None => Outcome::Failed("no samples".into()),
        };
        Row {
            scenario: scenario.into(),
            metric: metric.into(),
            unit,
            outcome,
            baseline: None,
            target: None,
        }
    }

    /// A row the product cannot fill yet.
    pub fn not_available(scenario: &str, metric: &str, why: &str) -> Self {
        Row {
            scenario: scenario.into(),
            metric: metric.into(),
            unit: "",
            outcome: Outcome::NotAvailable(why.into()),
            baseline: None,
            target: None,
        }
    }

    /// A scenario that failed to run.
    pub fn failed(scenario: &str, error: &anyhow::Error) -> Self {
        Row {
            scenario: scenario.into(),
            metric: "(scenario)".into(),
            unit: "",
            outcome: Outcome::Failed(format!("{error:#}").replace('\n', " ")),
            baseline: None,
            target: None,
        }
    }

    /// With a baseline figure.
    pub fn baseline(mut self, baseline: Option<f64>) -> Self {
        self.baseline = baseline;
        self
    }

    /// With a target.
    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    /// median / baseline.
    pub fn ratio(&self) -> Option<f64> {
        match (&self.outcome, self.baseline) {
            (Outcome::Measured(s), Some(b)) if b > 0.0 => Some(s.median / b),
            _ => None,
        }
    }

    /// Whether the target was met; `None` without a target or a figure.
    pub fn met(&self) -> Option<bool> {
        let target = self.target?;
        let Outcome::Measured(s) = &self.outcome else {
            return None;
        };
        let value = match target.figure {
            Figure::Median => s.median,
            Figure::P99 => s.p99,
            Figure::Ratio => self.ratio()?,
            Figure::Excess => s.median - self.baseline?,
        };
        Some(if target.at_most {
            value <= target.limit
        } else {
            value >= target.limit
        })
    }

    fn cells(&self) -> Vec<String> {
        let dash = || "-".to_string();
        let mut cells = vec![self.scenario.clone(), self.metric.clone()];
        match &self.outcome {
            Outcome::Measured(s) => cells.extend([
                self.unit.to_string(),
                s.n.to_string(),
                num(s.median),
                num(s.p99),
                num(s.min),
                num(s.max),
            ]),
            Outcome::NotAvailable(why) => {
                cells.push(format!("n/a: {why}"));
                cells.extend(std::iter::repeat_with(dash).take(5));
            }
            Outcome::Failed(why) => {
                cells.push(format!("FAILED: {why}"));
                cells.extend(std::iter::repeat_with(dash).take(5));
            }
        }
        cells.push(self.baseline.map_or_else(dash, num));
        cells.push(self.ratio().map_or_else(dash, |r| format!("{r:.2}")));
        cells.push(self.target.map_or_else(dash, |t| t.describe(self.unit)));
        cells.push(match self.met() {
            Some(true) => "met".into(),
            Some(false) => "MISSED".into(),
            None => dash(),
        });
        cells
    }
}

const HEADERS: [&str; 12] = [
    "scenario", "metric", "unit", "n", "median", "p99", "min", "max", "baseline", "ratio",
    "target", "verdict",
];

/// All rows of one run.
#[derive(Debug, Default)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// Add a row, printing it at once as a progress line on stderr.
    pub fn push(&mut self, row: Row) {
        eprintln!("  {}", row.cells().join(" | "));
        self.rows.push(row);
    }

    /// The rows so far.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// True if any scenario failed to run.
    pub fn any_failed(&self) -> bool {
        self.rows
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Failed(_)))
    }

    /// The table with aligned columns, for a terminal.
    pub fn render_text(&self) -> String {
        let rows: Vec<Vec<String>> = self.rows.iter().map(Row::cells).collect();
        let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(out, "{}", padded.join("  ").trim_end());
        };
        line(&mut out, &HEADERS.map(String::from));
        line(
            &mut out,
            &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
        );
        for row in &rows {
            line(&mut out, row);
        }
        out
    }

    /// The table in Markdown, for `docs/benchmarks.md`.
    pub fn render_markdown(&self) -> String {
        let mut out = format!("| {} |\n", HEADERS.join(" | "));
        let _ = writeln!(out, "|{}", " --- |".repeat(HEADERS.len()));
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.cells().join(" | ").replace('\n', " "));
        }
        out
    }
}

/// A number with as many decimals as its size deserves.
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_ratios() {
        let row = Row::measured("s", "m", "ms", &[1.0, 2.0, 3.0])
            .baseline(Some(4.0))
            .target(Target::ratio_below(0.6));
        assert_eq!(row.ratio(), Some(0.5));
        assert_eq!(row.met(), Some(true));
        let row = Row::measured("s", "m", "ms", &[1.0, 2.0, 30.0]).target(Target::p99_below(20.0));
        assert_eq!(row.met(), Some(false));
        assert_eq!(Row::not_available("s", "m", "why").met(), None);
    }

    #[test]
    fn excess_over_the_baseline() {
        let within = Row::measured("s", "m", "ms", &[3.0, 3.5, 4.0])
            .baseline(Some(2.6))
            .target(Target::excess_below(1.0));
        assert_eq!(within.met(), Some(true));
        let beyond = within.clone().baseline(Some(2.4));
        assert_eq!(beyond.met(), Some(false));
        let alone = Row::measured("s", "m", "ms", &[3.0]).target(Target::excess_below(1.0));
        assert_eq!(alone.met(), None, "no baseline, no verdict");
        assert!(
            within
                .cells()
                .contains(&"median - baseline <= 1.00 ms".to_string())
        );
    }

    #[test]
    fn failures_are_reported() {
        let mut report = Report::default();
        report.push(Row::measured("s", "m", "ms", &[1.0]));
        assert!(!report.any_failed());
        report.push(Row::failed("s", &anyhow::anyhow!("boom")));
        assert!(report.any_failed());
        assert!(report.render_text().contains("FAILED: boom"));
        assert!(report.render_markdown().starts_with("| scenario |"));
    }
}
