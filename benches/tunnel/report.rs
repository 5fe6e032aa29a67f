//! The report: one markdown table per section, a column per pair, every
//! figure followed by its ratio to the OpenSSH reference of the same run.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::opts::Pair;

/// Which direction of a figure is good, shown next to the metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// Counts and names: no ratio.
    Neither,
}

#[derive(Clone, Debug)]
pub enum Cell {
    Num(f64),
    Text(String),
}

struct Row {
    metric: String,
    better: Better,
    cells: HashMap<Pair, Cell>,
}

struct Section {
    title: String,
    rows: Vec<Row>,
    /// The pair this section's ratios are relative to.
    reference: Pair,
}

#[derive(Default)]
pub struct Report {
    /// Lines describing the run (machine, versions, sizes).
    pub header: Vec<String>,
    sections: Vec<Section>,
    /// Things that broke: a path that did not work, a hash mismatch.
    pub errors: Vec<String>,
    /// Notable results that are not errors (e.g. a stalled slow reader).
    pub findings: Vec<String>,
    /// Free text shown after the tables (the crypto ceiling, notes).
    pub notes: Vec<String>,
}

impl Report {
    /// Records `cell` for `pair` in `metric` of `section` (created in the
    /// order first used).
    pub fn set(&mut self, section: &str, metric: &str, better: Better, pair: Pair, cell: Cell) {
        let s = self.section(section);
        let row = match s.rows.iter().position(|r| r.metric == metric) {
            Some(i) => &mut s.rows[i],
            None => {
                s.rows.push(Row {
                    metric: metric.to_string(),
                    better,
                    cells: HashMap::new(),
                });
                s.rows.last_mut().expect("just pushed")
            }
        };
        row.cells.insert(pair, cell);
    }

    /// Makes `section`'s ratios relative to `pair` instead of
    /// [`Pair::REFERENCE`] (its title should say so).
    pub fn reference(&mut self, section: &str, pair: Pair) {
        self.section(section).reference = pair;
    }

    /// The section titled `title`, created (last) if new.
    fn section(&mut self, title: &str) -> &mut Section {
        match self.sections.iter().position(|s| s.title == title) {
            Some(i) => &mut self.sections[i],
            None => {
                self.sections.push(Section {
                    title: title.to_string(),
                    rows: Vec::new(),
                    reference: Pair::REFERENCE,
                });
                self.sections.last_mut().expect("just pushed")
            }
        }
    }

    /// A number, if there is one.
    pub fn num(&mut self, section: &str, metric: &str, better: Better, pair: Pair, v: Option<f64>) {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            self.set(section, metric, better, pair, Cell::Num(v));
        }
    }

    pub fn text(&mut self, section: &str, metric: &str, pair: Pair, t: impl Into<String>) {
        self.set(section, metric, Better::Neither, pair, Cell::Text(t.into()));
    }

    pub fn markdown(&self, pairs: &[Pair]) -> String {
        let mut out = String::new();
        for line in &self.header {
            let _ = writeln!(out, "{line}");
        }
        for s in &self.sections {
            let _ = writeln!(out, "\n### {}\n", s.title);
            let _ = write!(out, "| metric |");
            for p in pairs {
                let _ = write!(out, " {} |", p.label());
            }
            let _ = write!(out, "\n| --- |");
            for _ in pairs {
                let _ = write!(out, " ---: |");
            }
            out.push('\n');
            for r in &s.rows {
                let arrow = match r.better {
                    Better::Higher => " ↑",
                    Better::Lower => " ↓",
                    Better::Neither => "",
                };
                let _ = write!(out, "| {}{arrow} |", r.metric);
                let reference = match r.cells.get(&s.reference) {
                    Some(Cell::Num(v)) if r.better != Better::Neither => Some(*v),
                    _ => None,
                };
                for p in pairs {
                    let cell = r.cells.get(p);
                    let _ = write!(out, " {} |", cell_text(cell, reference, *p == s.reference));
                }
                out.push('\n');
            }
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "{n}");
            }
        }
        if !self.findings.is_empty() {
            let _ = writeln!(out, "\n### Findings\n");
            for f in &self.findings {
                let _ = writeln!(out, "- {f}");
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out, "\n### Errors\n");
            for e in &self.errors {
                let _ = writeln!(out, "- {}", e.replace('\n', "\n  "));
            }
        }
        out
    }
}

fn cell_text(cell: Option<&Cell>, reference: Option<f64>, is_reference: bool) -> String {
    match cell {
        None => "–".to_string(),
        Some(Cell::Text(t)) => t.clone(),
        Some(Cell::Num(v)) => match reference {
            Some(r) if !is_reference && r != 0.0 => {
                format!("{} (×{:.2})", format_num(*v), v / r)
            }
            _ => format_num(*v),
        },
    }
}

/// Three significant digits or so, without exponent notation.
pub fn format_num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
