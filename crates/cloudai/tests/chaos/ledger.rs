//! What the tasks themselves wrote: every run of a task appends `start`, one `tick` a second
//! and `done` lines to one file that all workers of a scenario share, so the suite counts runs
//! from the work, not from what the master believes.
//!
//! A line is `KIND TASK RUN WORKER TIME`: `RUN` names one execution (worker, pid and start
//! time), `TIME` is `/proc/uptime`, one clock for every container on this kernel.

use std::collections::BTreeMap;

/// The shell script of a task that works `seconds` seconds and records it in `/chaos/events.log`.
pub fn task_script(seconds: u32) -> String {
    format!(
        "f=/chaos/events.log; t=$CLOUDAI_TASK_ID; h=$(hostname); read u x </proc/uptime; r=$h.$$.$u; \
         echo \"start $t $r $h $u\" >>$f; i=0; \
         while [ $i -lt {seconds} ]; do sleep 1; i=$((i+1)); read u x </proc/uptime; echo \"tick $t $r $h $u\" >>$f; done; \
         read u x </proc/uptime; echo \"done $t $r $h $u\" >>$f"
    )
}

/// One execution of a task, as its lines tell it.
#[derive(Clone, Debug)]
pub struct Run {
    pub worker: String,
    pub start: f64,
    /// The last tick or done: the run was alive until at least then.
    pub last: f64,
    pub done: Option<f64>,
}

/// Every run of every task, by task id.
#[derive(Debug, Default)]
pub struct Ledger {
    pub runs: BTreeMap<String, Vec<Run>>,
}

impl Ledger {
    pub fn parse(text: &str) -> Self {
        let mut by_run: BTreeMap<(String, String), Run> = BTreeMap::new();
        for line in text.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [kind, task, run, worker, time] = parts[..] else { continue };
            let Ok(time) = time.parse::<f64>() else { continue };
            let entry = by_run.entry((task.to_owned(), run.to_owned())).or_insert_with(|| Run {
                worker: worker.to_owned(),
                start: time,
                last: time,
                done: None,
            });
            entry.start = entry.start.min(time);
            entry.last = entry.last.max(time);
            if kind == "done" {
                entry.done = Some(time);
            }
        }
        let mut runs: BTreeMap<String, Vec<Run>> = BTreeMap::new();
        for ((task, _), run) in by_run {
            runs.entry(task).or_default().push(run);
        }
        for list in runs.values_mut() {
            list.sort_by(|a, b| a.start.total_cmp(&b.start));
        }
        Self { runs }
    }

    pub fn runs_of(&self, task: &str) -> &[Run] {
        self.runs.get(task).map_or(&[], Vec::as_slice)
    }

    /// Tasks that started more than once.
    pub fn ran_twice(&self, tasks: &[String]) -> usize {
        tasks.iter().filter(|t| self.runs_of(t).len() > 1).count()
    }

    /// Tasks with two runs alive at the same time: one started before the other's last sign of
    /// life (a second apart at most between ticks, so touching intervals count as overlapping).
    pub fn overlapped(&self, tasks: &[String]) -> Vec<String> {
        tasks
            .iter()
            .filter(|t| {
                let runs = self.runs_of(t);
                runs.iter()
                    .enumerate()
                    .any(|(i, a)| runs[i + 1..].iter().any(|b| b.start <= a.last && a.start <= b.last))
            })
            .cloned()
            .collect()
    }

    /// Tasks whose work finished more than once.
    pub fn done_twice(&self, tasks: &[String]) -> usize {
        tasks.iter().filter(|t| self.runs_of(t).iter().filter(|r| r.done.is_some()).count() > 1).count()
    }

    /// Whether some run of the task finished its work.
    pub fn done(&self, task: &str) -> bool {
        self.runs_of(task).iter().any(|r| r.done.is_some())
    }
}

/// This kernel's uptime in seconds: the clock the tasks write.
pub fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .expect("/proc/uptime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_runs_overlaps_and_double_completions() {
        let text = "start a r1 w1 10.0\ntick a r1 w1 11.0\ntick a r1 w1 12.0\n\
                    start a r2 w2 11.5\ndone a r2 w2 20.0\n\
                    start b r3 w1 10.0\ndone b r3 w1 12.0\nstart b r4 w2 30.0\ndone b r4 w2 31.0\n\
                    start c r5 w3 10.0\ngarbage\ndone c r5 w3 11.0\n";
        let ledger = Ledger::parse(text);
        let tasks: Vec<String> = ["a", "b", "c", "d"].map(String::from).into();
        assert_eq!(ledger.ran_twice(&tasks), 2);
        assert_eq!(ledger.overlapped(&tasks), vec!["a".to_owned()]);
        assert_eq!(ledger.done_twice(&tasks), 1);
        assert!(ledger.done("c") && !ledger.done("d"));
    }
}
