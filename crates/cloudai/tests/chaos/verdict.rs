//! A scenario's outcome: the counts of the table and what it got wrong.

use serde_json::Value;

use super::api::is_final;
use super::cluster::MAX_RETRIES;
use super::ledger::Ledger;

#[derive(Debug, Default)]
pub struct Outcome {
    pub scenario: &'static str,
    pub submitted: usize,
    pub completed: usize,
    pub failed: usize,
    pub lost: usize,
    pub ran_twice: usize,
    pub overlapped: usize,
    pub done_twice: usize,
    /// The recovery figures, with their bounds.
    pub recovery: Vec<String>,
    /// Every assertion that did not hold, in words.
    pub failures: Vec<String>,
    pub seconds: f64,
}

impl Outcome {
    pub fn new(scenario: &'static str) -> Self {
        Self { scenario, ..Self::default() }
    }

    pub fn fail(&mut self, what: impl Into<String>) {
        self.failures.push(what.into());
    }

    /// Records a recovery figure and checks it against `bound` seconds (`None`: not reached).
    pub fn recovery(&mut self, what: &str, figure: Option<f64>, bound: f64) {
        match figure {
            Some(s) if s <= bound => self.recovery.push(format!("{what} {s:.1} s (≤ {bound} s)")),
            Some(s) => {
                self.recovery.push(format!("{what} {s:.1} s (> {bound} s)"));
                self.fail(format!("{what} took {s:.1} s, over the bound of {bound} s"));
            }
            None => {
                self.recovery.push(format!("{what} never (bound {bound} s)"));
                self.fail(format!("{what}: not within the observation window (bound {bound} s)"));
            }
        }
    }

    /// The checks every scenario makes: each task completed, or failed past its retries with
    /// the reason; none lost; never two runs at once; none completed twice; and, when
    /// `keep_finished`, no task whose work was done was run again.
    pub fn judge(&mut self, ids: &[String], tasks: &[Value], ledger: &Ledger, keep_finished: bool) {
        self.submitted = ids.len();
        for id in ids {
            let Some(task) = tasks.iter().find(|t| t["task_id"] == id.as_str()) else {
                self.lost += 1;
                self.fail(format!("task {id} is gone from the master"));
                continue;
            };
            let attempt = task["attempt"].as_u64().unwrap_or(0);
            match task["status"].as_str() {
                Some("completed") if ledger.done(id) => self.completed += 1,
                Some("completed") => {
                    self.lost += 1;
                    self.fail(format!("task {id} is completed but no run of it finished its work"));
                }
                Some("failed") => {
                    self.failed += 1;
                    let error = task["error"].as_str().unwrap_or("");
                    if error.is_empty() || attempt <= u64::from(MAX_RETRIES) {
                        self.fail(format!("task {id} failed at attempt {attempt}: {error:?}"));
                    }
                }
                _ if !is_final(task) => {
                    self.lost += 1;
                    self.fail(format!("task {id} never ended: {} (attempt {attempt})", task["status"]));
                }
                other => {
                    self.lost += 1;
                    self.fail(format!("task {id} ended {other:?}"));
                }
            }
        }
        self.ran_twice = ledger.ran_twice(ids);
        let overlapped = ledger.overlapped(ids);
        self.overlapped = overlapped.len();
        for id in overlapped {
            let runs: Vec<String> = ledger
                .runs_of(&id)
                .iter()
                .map(|r| format!("{} {:.1}–{:.1}", r.worker, r.start, r.last))
                .collect();
            self.fail(format!("task {id} ran twice at once: {}", runs.join(", ")));
        }
        self.done_twice = ledger.done_twice(ids);
        if self.done_twice > 0 {
            self.fail(format!("{} tasks completed their work twice", self.done_twice));
        }
        if keep_finished {
            let redone: Vec<&String> = ids
                .iter()
                .filter(|id| {
                    let runs = ledger.runs_of(id);
                    runs.first().is_some_and(|r| r.done.is_some()) && runs.len() > 1
                })
                .collect();
            if !redone.is_empty() {
                self.fail(format!(
                    "{} tasks ran again after their work was done (finished work thrown away): {redone:?}",
                    redone.len()
                ));
            }
        }
    }

    pub fn row(&self) -> String {
        let verdict = if self.failures.is_empty() {
            "pass".to_owned()
        } else {
            format!("FAIL ({})", self.failures.len())
        };
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {verdict} |",
            self.scenario,
            self.submitted,
            self.completed,
            self.failed,
            self.lost,
            self.ran_twice,
            self.overlapped,
            self.done_twice,
            if self.recovery.is_empty() { "–".to_owned() } else { self.recovery.join("; ") },
        )
    }
}

pub const TABLE_HEAD: &str = "| scenario | submitted | completed | failed | lost | ran twice | overlapped | completed twice | recovery time | verdict |\n\
                              |---|---|---|---|---|---|---|---|---|---|";
