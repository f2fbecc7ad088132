//! The differential runs (`differential`, `scripts/differential`): generated cases
//! ([`crate::generate`]) under every stack loopback offers, held against the arbiter.
//!
//! Each batch of cases runs under each [`Stack`] on a loopback cluster of its own; what every
//! case's HTTPProxy status and its answers settled to ([`Observed`]) is compared with the
//! arbiter's (the last stack: the real Contour with the real Envoy when it is there). A case
//! that disagrees is shrunk ([`shrink`]): its dimensions move toward their plainest options as
//! long as the disagreement stays, so the finding names only what causes it. Each distinct
//! shrunk case is written as a scenario file that asserts what the arbiter did, with the seed
//! and the difference in its header: resolved from Contour's or Envoy's source, it fixes the
//! reference model or loopback's proxy, or records the implementation's defect, and joins the
//! catalog.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::generate::{Answered, AnsweredStatus, Case, PathAnswer};
use crate::runner::RunSettings;
use crate::scenario::load::parse_generated;
use crate::suite;
use crate::target::{Environment, LoopbackController, LoopbackOptions, TargetConfig};

/// A way to run loopback: its controller and data plane, and faults planted in it.
#[derive(Debug, Clone)]
pub struct Stack {
    pub name: String,
    pub options: LoopbackOptions,
}

impl Stack {
    /// Loopback's reference controller and proxy.
    pub fn reference() -> Stack {
        Stack { name: "reference".into(), options: LoopbackOptions::default() }
    }

    /// The real Contour with loopback's proxy.
    pub fn contour() -> Stack {
        Stack {
            name: "contour".into(),
            options: LoopbackOptions { controller: LoopbackController::contour(), ..Default::default() },
        }
    }

    /// The real Contour with the real Envoy: the arbiter when it is there.
    pub fn contour_with_envoy() -> Stack {
        Stack {
            name: "contour+envoy".into(),
            options: LoopbackOptions { controller: LoopbackController::contour_with_envoy(), ..Default::default() },
        }
    }

    /// Every stack this machine can run, the arbiter last: the reference always, the real
    /// Contour when it is built, and Envoy when it is fetched too.
    pub fn available() -> Vec<Stack> {
        let mut stacks = vec![Stack::reference()];
        if loopback::contour::built_for_tests() {
            stacks.push(Stack::contour());
            if loopback::envoy::installed_for_tests() {
                stacks.push(Stack::contour_with_envoy());
            }
        }
        stacks
    }
}

/// What one case settled to under one stack: each HTTPProxy's status and what `/` answered,
/// with the run's own names replaced by stable ones; or why it could not be observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub statuses: BTreeMap<String, Value>,
    pub traffic: BTreeMap<String, Value>,
    pub failure: Option<String>,
}

impl Observed {
    /// How this differs from `arbiter`'s, one line per difference; empty when they agree.
    pub fn differences(&self, arbiter: &Observed, name: &str, arbiter_name: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.failure.is_some() != arbiter.failure.is_some() {
            let say = |o: &Observed| o.failure.clone().unwrap_or_else(|| "observed".into());
            out.push(format!("case: {arbiter_name}: {}; {name}: {}", say(arbiter), say(self)));
        }
        let (my_traffic, their_traffic) = (as_compared(&self.traffic), as_compared(&arbiter.traffic));
        for (what, mine, theirs) in
            [("status", &self.statuses, &arbiter.statuses), ("traffic", &my_traffic, &their_traffic)]
        {
            let keys: std::collections::BTreeSet<&String> = mine.keys().chain(theirs.keys()).collect();
            for key in keys {
                if mine.get(key) != theirs.get(key) {
                    let show = |v: Option<&Value>| v.map_or("nothing".to_string(), Value::to_string);
                    out.push(format!(
                        "{what} {key}: {arbiter_name}: {}; {name}: {}",
                        show(theirs.get(key)),
                        show(mine.get(key))
                    ));
                }
            }
        }
        out
    }

    /// What `/` settled to, in a word.
    pub fn outcome(&self) -> &'static str {
        if self.failure.is_some() {
            return "not observed";
        }
        let Some(seen) = self.traffic.get("observe /") else { return "not observed" };
        let Some(answer) = seen.as_array().and_then(|a| a.first()) else { return "unsettled" };
        match (answer["status"].as_u64(), answer["backend"]["scheme"].as_str()) {
            (Some(_), Some("https")) => "served over TLS",
            (Some(_), Some(_)) => "served without TLS",
            (Some(502 | 503), None) => "upstream failed",
            (Some(404), None) => "not routed",
            _ => "other",
        }
    }

    /// The arbiter's HTTPProxy statuses and its answers to each path, for an asserting
    /// scenario; `None` when some answers never settled or the case could not be observed.
    fn asserted(&self) -> Option<(Vec<AnsweredStatus>, Vec<PathAnswer>)> {
        if self.failure.is_some() {
            return None;
        }
        let mut statuses = Vec::new();
        for (key, status) in &self.statuses {
            statuses.push(AnsweredStatus {
                proxy: key.rsplit('/').next()?.to_string(),
                current_status: status["currentStatus"].as_str()?.to_string(),
                description: status["description"].as_str()?.to_string(),
            });
        }
        let mut answers = Vec::new();
        for (key, seen) in &self.traffic {
            let path = key.strip_prefix("observe ")?;
            let seen = seen.as_array()?.first()?;
            let status = seen["status"].as_u64().map_or("none".to_string(), |c| c.to_string());
            answers.push((path.to_string(), Answered { status, backend_tls: seen["backend"]["scheme"] == "https" }));
        }
        Some((statuses, answers))
    }
}

/// Traffic as the runs compare it: an answer that did not reach the backend, 502 or 503 with
/// an empty body or Envoy's "upstream connect error" text, is one outcome, "upstream failed".
/// Which of the two Envoy gives for a cluster whose TLS context it cannot build depends on
/// timing: it refuses the cluster (an empty 503) when the installation's client certificate
/// arrived first, and keeps it without TLS ("remote connection failure") when the
/// certificate arrives after it (docs/contract.md S7). The contract and the catalog do not
/// tell them apart either.
fn as_compared(traffic: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    let mut traffic = traffic.clone();
    for answers in traffic.values_mut() {
        for answer in answers.as_array_mut().into_iter().flatten() {
            let failed = answer["backend"].is_null()
                && matches!(answer["status"].as_u64(), Some(502 | 503))
                && matches!(answer["body"].as_str(), Some("empty" | "upstream connect error"));
            if failed {
                answer["body"] = Value::from("upstream failed");
            }
        }
    }
    traffic
}

/// Runs `cases` under `stack` on a loopback cluster of its own, `parallel` at a time.
///
/// # Errors
/// The cluster does not start, or a case does not load (a generator bug).
pub async fn observe(stack: &Stack, cases: &[Case], parallel: usize) -> Result<Vec<Observed>, String> {
    let loaded = cases
        .iter()
        .map(|case| {
            parse_generated(Path::new(&format!("generated/{}.yaml", case.label)), &case.render())
                .map_err(|e| format!("generated case {} does not load: {e:?}", case.describe()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let config = TargetConfig::Loopback(stack.options.clone());
    let settings = RunSettings { record_statuses: true, record_traffic: true, ..RunSettings::default() };
    let environment = Environment::connect(&config, settings).await.map_err(|e| format!("{}: {e}", stack.name))?;
    let outcomes = suite::run_all(&environment, &loaded, parallel, &()).await;
    environment.shutdown().await;
    let mut by_name: BTreeMap<String, Observed> = outcomes
        .into_iter()
        .map(|o| {
            let failure = o.failure.as_ref().map(|f| f.to_string());
            let observed = Observed {
                statuses: o.statuses.into_iter().collect(),
                traffic: o.traffic.into_iter().collect(),
                failure: failure.or(o.skipped.map(|s| format!("skipped: {}", s.text))),
            };
            (o.name, observed)
        })
        .collect();
    cases.iter().map(|c| by_name.remove(&c.label).ok_or_else(|| format!("case {} has no outcome", c.label))).collect()
}

/// The plainest case that still disagrees between `other` and `arbiter`. Each round tries
/// every case one dimension plainer at once; the moves that keep the disagreement are then
/// made together (the cause is usually one or two dimensions, so the rest go in one round),
/// or, if together they lose it, only the plainest one.
///
/// # Errors
/// As [`observe`].
pub async fn shrink(case: &Case, other: &Stack, arbiter: &Stack, parallel: usize) -> Result<Case, String> {
    let mut current = case.clone();
    loop {
        let candidates = current.simpler();
        let still = disagreeing(&candidates, other, arbiter, parallel).await?;
        let keep: Vec<&Case> = candidates.iter().zip(&still).filter(|(_, d)| **d).map(|(c, _)| c).collect();
        let Some(first) = keep.first() else { return Ok(current) };
        let mut combined = current.clone();
        combined.label = format!("{}-all", case.label);
        for candidate in &keep {
            for (mine, theirs) in combined.choices.iter_mut().zip(&candidate.choices) {
                *mine = (*mine).min(*theirs);
            }
        }
        current = if keep.len() > 1 && disagreeing(std::slice::from_ref(&combined), other, arbiter, parallel).await?[0]
        {
            combined
        } else {
            (*first).clone()
        };
    }
}

/// Whether each case disagrees between `other` and `arbiter`, both run at once.
async fn disagreeing(cases: &[Case], other: &Stack, arbiter: &Stack, parallel: usize) -> Result<Vec<bool>, String> {
    if cases.is_empty() {
        return Ok(Vec::new());
    }
    let (theirs, mine) = tokio::join!(observe(arbiter, cases, parallel), observe(other, cases, parallel));
    let (theirs, mine) = (theirs?, mine?);
    Ok(mine.iter().zip(&theirs).map(|(m, t)| !m.differences(t, &other.name, &arbiter.name).is_empty()).collect())
}

/// A disagreement, shrunk.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The generated case that first showed it (its label says its index).
    pub original: Case,
    pub shrunk: Case,
    /// The stack that disagreed with the arbiter.
    pub stack: String,
    pub arbiter: String,
    /// The shrunk case's differences.
    pub differences: Vec<String>,
    /// How many generated cases shrank to it, or carried its departures
    /// ([`Case::within`]) and were counted with it unshrunk.
    pub occurrences: usize,
    /// Where its scenario file was written.
    pub file: Option<PathBuf>,
}

/// What a differential run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub cases: u64,
    pub stacks: Vec<String>,
    /// Cases on which every stack agreed with the arbiter.
    pub agreed: u64,
    pub findings: Vec<Finding>,
    /// Disagreeing cases not shrunk (beyond the run's shrink budget).
    pub unshrunk: u64,
    /// What the arbiter's answers to `/` settled to, by kind, over every case: that the runs
    /// compared something (backends served, upstreams refused, hosts not routed), not only
    /// cases that could not be observed.
    pub arbiter_outcomes: BTreeMap<&'static str, u64>,
    /// Cases the arbiter could not observe, and why.
    pub not_observed: Vec<(Case, String)>,
    /// Disagreeing cases whose shrunk form agreed when observed again: `(case, stack)`. A
    /// disagreement that comes and goes, reported but not a finding.
    pub unconfirmed: Vec<(Case, String)>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub cases: u64,
    /// Cases per loopback cluster.
    pub batch: u64,
    pub parallel: usize,
    /// At least two, the arbiter last.
    pub stacks: Vec<Stack>,
    /// At most this many disagreeing cases are shrunk (the others are counted).
    pub shrink_budget: usize,
    /// Where findings are written; none: not written.
    pub findings_dir: Option<PathBuf>,
}

/// Generates `plan.cases` cases from `plan.seed`, runs them under every stack, shrinks what
/// disagrees with the arbiter and writes the findings. `progress` hears a line per batch and
/// per finding.
///
/// # Errors
/// A stack does not start, or a finding cannot be written.
pub async fn run(plan: &Plan, progress: &dyn Fn(&str)) -> Result<Summary, String> {
    let (arbiter, others) = plan.stacks.split_last().ok_or("no stacks")?;
    if others.is_empty() {
        return Err("a differential run needs two stacks or more: the arbiter and one to hold against it".into());
    }
    let mut summary = Summary { stacks: plan.stacks.iter().map(|s| s.name.clone()).collect(), ..Summary::default() };
    let mut disagreeing: Vec<(Case, usize)> = Vec::new();
    let mut start = 0;
    while start < plan.cases {
        let end = (start + plan.batch.max(1)).min(plan.cases);
        let cases: Vec<Case> = (start..end).map(|i| Case::generate(plan.seed, i)).collect();
        // Every stack at once, on clusters of their own: most of a case's time is waiting.
        let runs = futures::future::join_all(plan.stacks.iter().map(|stack| observe(stack, &cases, plan.parallel)));
        let mut observed = runs.await.into_iter().collect::<Result<Vec<_>, _>>()?;
        let theirs = observed.pop().unwrap_or_default();
        for (case, observed) in cases.iter().zip(&theirs) {
            *summary.arbiter_outcomes.entry(observed.outcome()).or_default() += 1;
            if let Some(why) = &observed.failure {
                summary.not_observed.push((case.clone(), why.clone()));
            }
        }
        let mut batch_disagreeing = 0;
        let mut seen_disagreeing = vec![false; cases.len()];
        for (index, (other, mine)) in others.iter().zip(&observed).enumerate() {
            for (n, case) in cases.iter().enumerate() {
                if !mine[n].differences(&theirs[n], &other.name, &arbiter.name).is_empty() {
                    disagreeing.push((case.clone(), index));
                    if !seen_disagreeing[n] {
                        seen_disagreeing[n] = true;
                        batch_disagreeing += 1;
                    }
                }
            }
        }
        summary.agreed += (cases.len() - batch_disagreeing) as u64;
        summary.cases = end;
        progress(&format!(
            "cases {start}..{end}: {} agreed with {}, {batch_disagreeing} did not",
            cases.len() - batch_disagreeing,
            arbiter.name
        ));
        start = end;
    }

    let mut shrunk = 0;
    for (case, index) in disagreeing {
        let other = &others[index];
        // A case that carries a finding's departures is most likely that finding again.
        if let Some(known) = summary.findings.iter_mut().find(|f| f.stack == other.name && f.shrunk.within(&case)) {
            known.occurrences += 1;
            continue;
        }
        if shrunk >= plan.shrink_budget {
            summary.unshrunk += 1;
            continue;
        }
        shrunk += 1;
        let minimal = shrink(&case, other, arbiter, plan.parallel).await?;
        if let Some(known) =
            summary.findings.iter_mut().find(|f| f.stack == other.name && f.shrunk.choices == minimal.choices)
        {
            known.occurrences += 1;
            continue;
        }
        // Observe the minimal case once more, both ways, for the record and the file.
        let one = std::slice::from_ref(&minimal);
        let (theirs, mine) = tokio::join!(observe(arbiter, one, plan.parallel), observe(other, one, plan.parallel));
        let (theirs, mine) = (theirs?.remove(0), mine?.remove(0));
        let differences = mine.differences(&theirs, &other.name, &arbiter.name);
        if differences.is_empty() {
            summary.unconfirmed.push((case, other.name.clone()));
            continue;
        }
        let mut finding = Finding {
            original: case,
            shrunk: minimal,
            stack: other.name.clone(),
            arbiter: arbiter.name.clone(),
            differences,
            occurrences: 1,
            file: None,
        };
        if let Some(dir) = &plan.findings_dir {
            finding.file = Some(write_finding(dir, plan.seed, &finding, &theirs)?);
        }
        progress(&format!(
            "finding: {} disagrees with {} on {} (from case {}: {})",
            finding.stack,
            finding.arbiter,
            finding.shrunk.describe_departures(),
            finding.original.label,
            finding.differences.join("; ")
        ));
        summary.findings.push(finding);
    }
    Ok(summary)
}

/// Writes `finding` as a scenario file in `dir`: what the arbiter did, asserted, or (when its
/// answers never settled) the observing case; the seed and the difference in its header.
fn write_finding(dir: &Path, seed: u64, finding: &Finding, arbiter: &Observed) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let index = finding.original.label.trim_start_matches("gen-");
    let stack: String = finding.stack.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let name = format!("diff-{seed}-{index}-{stack}");
    let name: String = name.chars().take(40).collect::<String>().trim_end_matches('-').to_string();
    let mut header = String::new();
    let _ = writeln!(header, "# Found by the differential runs: seed {seed}, case {}.", finding.original.label);
    let _ = writeln!(header, "# Generated as: {}", finding.original.describe());
    let _ = writeln!(header, "# Shrunk to:    {}", finding.shrunk.describe_departures());
    let _ = writeln!(header, "# {} disagrees with {} (the arbiter):", finding.stack, finding.arbiter);
    for difference in &finding.differences {
        let _ = writeln!(header, "#   {difference}");
    }
    let body = match arbiter.asserted() {
        Some((statuses, answers)) => {
            header.push_str("# The steps assert what the arbiter did.\n");
            finding.shrunk.render_asserting(&name, &statuses, &answers)
        }
        None => {
            header.push_str("# The arbiter's answers never settled: the case observes, as generated.\n");
            finding.shrunk.render()
        }
    };
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, format!("{header}{body}")).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// The run's summary for people: counts, then each finding.
pub fn report(summary: &Summary, seed: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "differential: seed {seed}, {} cases under {} (arbiter: {}); {} agreed with the arbiter, {} findings{}",
        summary.cases,
        summary.stacks.join(", "),
        summary.stacks.last().map_or("none", String::as_str),
        summary.agreed,
        summary.findings.len(),
        if summary.unshrunk > 0 {
            format!(", {} disagreeing cases not shrunk", summary.unshrunk)
        } else {
            String::new()
        }
    );
    let outcomes: Vec<String> = summary.arbiter_outcomes.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
    let _ = writeln!(out, "the arbiter's answers: {}", outcomes.join(", "));
    for (case, why) in summary.not_observed.iter().take(5) {
        let _ = writeln!(out, "note: {} ({}) could not be observed: {why}", case.label, case.describe());
    }
    for (case, stack) in &summary.unconfirmed {
        let _ = writeln!(
            out,
            "note: {stack} disagreed with the arbiter on {} ({}), but its shrunk form agreed when observed again",
            case.label,
            case.describe()
        );
    }
    for finding in &summary.findings {
        let _ = writeln!(
            out,
            "\n{} vs {}: {} ({} case{}, first {})",
            finding.stack,
            finding.arbiter,
            finding.shrunk.describe_departures(),
            finding.occurrences,
            if finding.occurrences == 1 { "" } else { "s" },
            finding.original.label
        );
        for difference in &finding.differences {
            let _ = writeln!(out, "  {difference}");
        }
        if let Some(file) = &finding.file {
            let _ = writeln!(out, "  scenario: {}", file.display());
        }
    }
    out
}
