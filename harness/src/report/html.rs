//! One self-contained HTML page of a run, for people: the run header with its totals, results
//! per profile, then every scenario in one table, failures first. Each failure opens into its
//! evidence (where it failed, the whole message, the steps, the last answers and what the
//! backend saw); each skip shows its reason.
//!
//! The page needs nothing from the network: styles and the filter script are inline. The
//! filters (status, profile, feature, name) only hide rows, so with scripts off every scenario
//! is shown and the filter form stays hidden.

use std::collections::BTreeSet;

use super::{FailureReport, RunReport, ScenarioReport, Totals, Verdict, redact};
use crate::fixture::BackendEcho;
use crate::scenario::{Feature, Profile};
use crate::traffic::Answer;

/// Answer bodies are cut to this size on the page (the JSON report keeps them whole).
const BODY_EXCERPT: usize = 600;
/// A failure's summary line shows this much of the message's first line.
const SUMMARY_EXCERPT: usize = 240;
const COLUMNS: usize = 7;

/// The page for `report`: failures first, the first of them open.
pub fn render(report: &RunReport) -> String {
    let mut scenarios: Vec<&ScenarioReport> = report.scenarios.iter().collect();
    scenarios.sort_by_key(|s| s.verdict != Verdict::Failed);
    let mut out = String::from(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
    );
    out.push_str(&format!("<title>Upstream TLS conformance: run {}</title>\n", escape(&report.run_id)));
    out.push_str(&format!("<style>{STYLE}</style>\n</head>\n<body>\n"));
    out.push_str(&header(report));
    if let Some(changes) = &report.baseline {
        out.push_str(&since(changes));
    }
    out.push_str(&guarantees(report));
    out.push_str(&filters(&scenarios));
    out.push_str(&table(&scenarios));
    out.push_str(&format!("<script>{SCRIPT}</script>\n</body>\n</html>\n"));
    out
}

/// What changed since the baseline run: its headline, then a list per kind of change.
fn since(changes: &super::baseline::Changes) -> String {
    let mut out =
        format!("<section class=\"since\">\n<h2>Since the last run</h2>\n<p>{}</p>\n", escape(&changes.headline()));
    let lines = changes.lines();
    if !lines.is_empty() {
        out.push_str("<ul>");
        for line in lines {
            let (what, rest) = line.split_once(": ").unwrap_or((&line, ""));
            out.push_str(&format!("<li><b>{}</b>: {}</li>", escape(what), escape(rest)));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</section>\n");
    out
}

/// Title, run facts, totals and the counts per profile.
fn header(report: &RunReport) -> String {
    let t = report.totals;
    let implementation = &report.implementation;
    let tested = [&implementation.organization, &implementation.project, &implementation.version]
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let mut facts = vec![
        ("implementation", tested),
        ("target", report.target.clone()),
        ("run", report.run_id.clone()),
        ("started", report.started_at.clone()),
        ("wall time", format!("{:.1}s", report.wall_time_seconds)),
        ("harness", report.harness_version.to_string()),
    ];
    if let Some(signal) = report.interrupted {
        facts.push(("interrupted", format!("by {signal}: scenarios that did not finish are skipped")));
    }
    let mut out = String::from("<header>\n<h1>Upstream TLS conformance</h1>\n<dl class=\"facts\">");
    for (label, value) in facts {
        out.push_str(&format!("<div><dt>{label}</dt><dd>{}</dd></div>", escape(&value)));
    }
    out.push_str("</dl>\n<div class=\"summary\">\n<div class=\"totals\">");
    let counts = [
        (Verdict::Passed, t.passed),
        (Verdict::Failed, t.failed),
        (Verdict::Skipped, t.skipped),
        (Verdict::KnownFailure, t.known_failures),
    ];
    for (verdict, count) in counts {
        let name = verdict_name(verdict);
        out.push_str(&format!("<div class=\"total {name}\"><b>{count}</b> {name}</div>"));
    }
    out.push_str("</div>\n");
    out.push_str(&profiles(report));
    out.push_str("</div>\n</header>\n");
    out
}

/// Passed, failed and skipped per profile, as the Markdown summary counts them.
fn profiles(report: &RunReport) -> String {
    let mut out = String::from(
        "<table class=\"profiles\"><thead><tr><th>profile</th><th>passed</th><th>failed</th><th>skipped</th><th>known failures</th></tr></thead><tbody>",
    );
    for (profile, Totals { passed, failed, skipped, known_failures }) in report.profile_totals() {
        let cell = |n: usize, class: &str| {
            if n == 0 { "<td>0</td>".to_string() } else { format!("<td class=\"{class}\">{n}</td>") }
        };
        out.push_str(&format!(
            "<tr><th>{}</th>{}{}{}{}</tr>",
            profile.name(),
            cell(passed, "passed"),
            cell(failed, "failed"),
            cell(skipped, "skipped"),
            cell(known_failures, "known-failure")
        ));
    }
    out.push_str("</tbody></table>\n");
    out
}

/// Which guarantees hold: a row per clause of the contract that the run's scenarios prove,
/// with a mark per scenario proving it (its result; the name on hover) and the clause's
/// verdict: broken when one of them failed (known failures included), holds when all passed,
/// holds where tested when some were skipped, not tested when all were.
fn guarantees(report: &RunReport) -> String {
    let mut rows = String::new();
    for id in crate::scenario::load::contract_clauses() {
        let proving: Vec<&ScenarioReport> =
            report.scenarios.iter().filter(|s| s.contract.iter().any(|c| c == id)).collect();
        if proving.is_empty() {
            continue;
        }
        let any = |verdicts: &[Verdict]| proving.iter().any(|s| verdicts.contains(&s.verdict));
        let (class, word) = if any(&[Verdict::Failed, Verdict::KnownFailure]) {
            ("failed", "broken")
        } else if proving.iter().all(|s| s.verdict == Verdict::Skipped) {
            ("skipped", "not tested")
        } else if any(&[Verdict::Skipped]) {
            ("skipped", "holds where tested")
        } else {
            ("passed", "holds")
        };
        let text = crate::explain::clause_text(id).unwrap_or_default();
        let title = text.split(". ").next().unwrap_or_default().trim_end_matches('.');
        let marks: String = proving
            .iter()
            .map(|s| {
                let verdict = verdict_name(s.verdict);
                format!("<span class=\"dot {verdict}\" title=\"{}: {verdict}\"></span>", escape(&s.name))
            })
            .collect();
        rows.push_str(&format!(
            "<tr><th title=\"{}\">{id} {}</th><td><span class=\"badge {class}\">{word}</span></td>\
             <td class=\"dots\">{marks}</td></tr>\n",
            escape(&text),
            escape(title)
        ));
    }
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "<section class=\"guarantees\">\n<h2>Guarantees</h2>\n<table class=\"guarantees\"><thead><tr><th>clause</th>\
         <th>verdict</th><th>scenarios proving it</th></tr></thead><tbody>\n{rows}</tbody></table>\n</section>\n"
    )
}

/// The filter form; hidden until the script runs, as it does nothing without it.
fn filters(scenarios: &[&ScenarioReport]) -> String {
    let mut out = String::from("<form id=\"filters\" hidden>\n<fieldset class=\"status\"><legend>status</legend>");
    for verdict in [Verdict::Failed, Verdict::KnownFailure, Verdict::Passed, Verdict::Skipped] {
        let name = verdict_name(verdict);
        out.push_str(&format!(
            "<label class=\"{name}\"><input type=\"checkbox\" name=\"status\" value=\"{name}\" checked> {name}</label>"
        ));
    }
    out.push_str("</fieldset>\n<label>profile <select name=\"profile\"><option value=\"\">all</option>");
    let profiles: BTreeSet<Profile> = scenarios.iter().map(|s| s.profile).collect();
    for profile in profiles {
        out.push_str(&format!("<option>{}</option>", profile.name()));
    }
    out.push_str("</select></label>\n<label>feature <select name=\"feature\"><option value=\"\">all</option>");
    let features: BTreeSet<Feature> = scenarios.iter().flat_map(|s| s.features.iter().copied()).collect();
    for feature in features {
        out.push_str(&format!("<option>{}</option>", feature.name()));
    }
    out.push_str(
        "</select></label>\n<label>name <input type=\"search\" name=\"name\" placeholder=\"part of a name\"></label>\n\
         <output id=\"shown\"></output>\n</form>\n",
    );
    out
}

/// One `<tbody>` per scenario, so a filter hides its row and its details together.
fn table(scenarios: &[&ScenarioReport]) -> String {
    let mut out = String::from(
        "<table class=\"results\">\n<thead><tr><th>scenario</th><th>area</th><th>clauses</th><th>features</th>\
         <th>profile</th><th>result</th><th class=\"num\">time</th></tr></thead>\n",
    );
    let first_failure = scenarios.iter().position(|s| s.failure.is_some());
    for (i, scenario) in scenarios.iter().enumerate() {
        out.push_str(&scenario_rows(scenario, first_failure == Some(i)));
    }
    if scenarios.is_empty() {
        out.push_str(&format!("<tbody><tr><td colspan=\"{COLUMNS}\">No scenario ran.</td></tr></tbody>\n"));
    }
    out.push_str("</table>\n");
    out
}

fn scenario_rows(scenario: &ScenarioReport, open: bool) -> String {
    let status = verdict_name(scenario.verdict);
    let features: Vec<&str> = scenario.features.iter().map(|f| f.name()).collect();
    let tags: String = features.iter().map(|f| format!("<span class=\"tag\">{f}</span>")).collect();
    let mut out = format!(
        "<tbody data-status=\"{status}\" data-profile=\"{profile}\" data-features=\"{features}\" data-name=\"{name}\">\n\
         <tr class=\"{status}\"><td class=\"name\" title=\"{description}\">{name}</td><td>{area}</td>\
         <td class=\"clauses\">{clauses}</td><td>{tags}</td><td>{profile}</td>\
         <td><span class=\"badge {status}\">{status}</span></td><td class=\"num\">{time:.1}s</td></tr>\n",
        profile = scenario.profile.name(),
        features = features.join(" "),
        name = escape(&scenario.name),
        description = escape(&scenario.description),
        area = escape(&scenario.area),
        clauses = escape(&scenario.contract.join(", ")),
        time = scenario.duration_seconds,
    );
    let mut notes = String::new();
    if let Some(reason) = &scenario.skip_reason {
        let class = if scenario.not_applicable { "reason not-applicable" } else { "reason" };
        notes.push_str(&format!("<p class=\"{class}\">{}</p>", escape(reason)));
    }
    if let Some(known) = &scenario.known_failure {
        let finding = known.finding.as_ref().map_or(String::new(), |f| format!(" (see {f})"));
        notes.push_str(&format!(
            "<p class=\"reason known\">known failure: {}{}</p>",
            escape(&known.reason),
            escape(&finding)
        ));
    }
    if let Some(failure) = &scenario.failure {
        notes.push_str(&failure_details(scenario, failure, open));
    }
    if let Some(error) = &scenario.cleanup_error {
        notes.push_str(&format!("<p class=\"cleanup\">clean-up failed: {}</p>", escape(error)));
    }
    if !notes.is_empty() {
        out.push_str(&format!("<tr class=\"note\"><td colspan=\"{COLUMNS}\">{notes}</td></tr>\n"));
    }
    out.push_str("</tbody>\n");
    out
}

/// Where it failed and the start of the message in the summary line; the whole message, the
/// steps and the evidence inside.
fn failure_details(scenario: &ScenarioReport, failure: &FailureReport, open: bool) -> String {
    let place = failure.place();
    let mut out = format!(
        "<details{}><summary><b>{place}</b>: {}</summary>\n<div class=\"evidence\">\n\
         <p class=\"file\">{} &middot; namespace {}</p>\n",
        if open { " open" } else { "" },
        escape(&excerpt(failure.message.lines().next().unwrap_or_default(), SUMMARY_EXCERPT)),
        escape(&scenario.file),
        escape(&scenario.namespace),
    );
    if !scenario.description.is_empty() {
        out.push_str(&format!("<p class=\"description\">{}</p>\n", escape(&scenario.description)));
    }
    out.push_str(&format!("<pre class=\"message\">{}</pre>\n", escape(&failure.message)));
    if !failure.breaks.is_empty() {
        let intro = if failure.breaks.len() == 1 { "Broken guarantee" } else { "Broken guarantee, one of these" };
        out.push_str(&format!("<div class=\"breaks\"><b>{intro}</b> (docs/contract.md):<ul>"));
        for broken in &failure.breaks {
            out.push_str(&format!("<li>{}</li>", with_code(&broken.says)));
        }
        out.push_str("</ul></div>\n");
    }
    if let Some(file) = &scenario.diagnostics_file {
        out.push_str(&format!(
            "<p class=\"file\">Objects, statuses and backend logs: <a href=\"{0}\">{0}</a></p>\n",
            escape(file)
        ));
    }
    out.push_str("<h3>Steps</h3>\n<table class=\"steps\">");
    for step in &scenario.steps {
        let (class, mark) = if step.passed { ("passed", "ok") } else { ("failed", "failed") };
        out.push_str(&format!(
            "<tr class=\"{class}\"><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"mark\">{mark}</td><td class=\"num\">{:.1}s</td></tr>",
            step.index,
            step.kind,
            escape(&step.summary),
            step.duration_seconds
        ));
    }
    out.push_str("</table>\n");
    if !failure.answers.is_empty() {
        out.push_str("<h3>Last answers</h3>\n");
        out.push_str(&answers_table(&failure.answers));
    }
    out.push_str("</div>\n</details>\n");
    out
}

/// The last answers side by side, one column each: status, transport error, the body when the
/// backend did not echo, and every fact of the backend's echo.
fn answers_table(answers: &[Answer]) -> String {
    let row = |label: &str, cells: Vec<String>| {
        let cells: String = cells.iter().map(|c| format!("<td>{c}</td>")).collect();
        format!("<tr><th>{label}</th>{cells}</tr>")
    };
    let mut out = String::from("<table class=\"answers\"><thead><tr><th>request</th>");
    for answer in answers {
        out.push_str(&format!("<th><code>{}</code></th>", escape(&answer.request_id)));
    }
    out.push_str("</tr></thead><tbody>");
    let statuses =
        answers.iter().map(|a| a.status.map_or_else(|| "no response".to_string(), |s| format!("<b>{s}</b>")));
    out.push_str(&row("status", statuses.collect()));
    if answers.iter().any(|a| a.error.is_some()) {
        let errors = answers.iter().map(|a| a.error.as_deref().map_or_else(String::new, escape));
        out.push_str(&row("transport error", errors.collect()));
    }
    if answers.iter().any(|a| a.echo.is_none() && !a.body.trim().is_empty()) {
        let bodies = answers.iter().map(|a| match (&a.echo, a.body.trim()) {
            (None, body) if !body.is_empty() => format!("<pre>{}</pre>", escape(&excerpt(body, BODY_EXCERPT))),
            _ => String::new(),
        });
        out.push_str(&row("body", bodies.collect()));
    }
    if answers.iter().any(|a| a.echo.is_some()) {
        let facts: Vec<Option<[(&str, &str); 15]>> = answers.iter().map(|a| a.echo.as_ref().map(echo_facts)).collect();
        for i in 0..15 {
            let label = facts.iter().flatten().next().map_or("", |f| f[i].0);
            let cells = facts.iter().map(|f| match f {
                None => "<i>no echo</i>".to_string(),
                Some(f) if f[i].1.is_empty() => "<i>none</i>".to_string(),
                Some(f) => escape(f[i].1),
            });
            out.push_str(&row(label, cells.collect()));
        }
    }
    out.push_str("</tbody></table>\n");
    out
}

/// What the backend saw, labelled; an empty value means the backend saw none.
fn echo_facts(echo: &BackendEcho) -> [(&'static str, &str); 15] {
    [
        ("backend", &echo.backend),
        ("scheme", &echo.scheme),
        ("SNI", &echo.sni),
        ("TLS version", &echo.tls_version),
        ("cipher", &echo.cipher),
        ("ALPN", &echo.alpn),
        ("HTTP version", &echo.http_version),
        ("host", &echo.host),
        ("path", &echo.path),
        ("port", &echo.port),
        ("client verify", &echo.client_verify),
        ("client subject", &echo.client_subject),
        ("client issuer", &echo.client_issuer),
        ("client serial", &echo.client_serial),
        ("client SHA-1", &echo.client_sha1),
    ]
}

/// At most `limit` bytes of `text`, cut at a character boundary and marked when cut. Keys are
/// redacted before the cut: a key cut short may no longer be recognisable by value.
fn excerpt(text: &str, limit: usize) -> String {
    let text = redact(text);
    let cut = text.floor_char_boundary(limit);
    if cut < text.len() { format!("{}...", &text[..cut]) } else { text.to_string() }
}

fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Passed => "passed",
        Verdict::Failed => "failed",
        Verdict::Skipped => "skipped",
        Verdict::KnownFailure => "known-failure",
    }
}

/// `text` safe in HTML text and in quoted attribute values, private keys redacted first: the
/// page-wide [`redact`] would take a key cut short in one field (an excerpt) up to the end of
/// a key in a later field, markup in between.
/// `text` escaped, its Markdown code spans (`` `x` ``, as the contract writes them) set as code.
fn with_code(text: &str) -> String {
    let parts: Vec<&str> = text.split('`').collect();
    if parts.len().is_multiple_of(2) {
        // An unclosed span: shown as written.
        return escape(text);
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { format!("<code>{}</code>", escape(part)) } else { escape(part) })
        .collect()
}

fn escape(text: &str) -> String {
    let text = redact(text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root { --pass: #1a7f37; --pass-bg: #dafbe1; --fail: #cf222e; --fail-bg: #ffebe9; --skip: #7d4e00; --skip-bg: #fff8c5;
  --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa; --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
* { box-sizing: border-box; }
body { margin: 0 auto; padding: 24px 32px 48px; max-width: 1400px; color: #1f2328; background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
[hidden] { display: none !important; }
h1 { font-size: 24px; margin: 0 0 6px; }
h3 { font-size: 13px; margin: 14px 0 6px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
code, pre, .clauses, .num, .file, .echo dd { font-family: var(--mono); font-size: 12.5px; }
.facts { display: flex; flex-wrap: wrap; gap: 4px 22px; margin: 0 0 18px; color: var(--muted); }
.facts div { display: flex; gap: 6px; } .facts dd { margin: 0; color: #1f2328; }
.summary { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; margin-bottom: 22px; }
.totals { display: flex; gap: 12px; }
.total { min-width: 118px; padding: 10px 16px; border-radius: 8px; font-size: 15px; border: 1px solid; }
.total b { display: block; font-size: 30px; line-height: 1.1; }
.total.passed, .badge.passed, .profiles td.passed { color: var(--pass); }
.total.failed, .badge.failed, .profiles td.failed { color: var(--fail); }
.total.skipped, .badge.skipped, .profiles td.skipped { color: var(--skip); }
.total.passed, .badge.passed { background: var(--pass-bg); } .total.failed, .badge.failed { background: var(--fail-bg); }
.total.skipped, .badge.skipped { background: var(--skip-bg); }
.total.known-failure, .badge.known-failure, .profiles td.known-failure, .reason.known { color: var(--fail); }
.total.known-failure, .badge.known-failure { background: var(--skip-bg); }
table { border-collapse: collapse; }
.profiles th, .profiles td { padding: 3px 12px; border-bottom: 1px solid var(--line); text-align: right; }
.profiles th:first-child, .profiles tbody th { text-align: left; }
.profiles thead th, .results thead th { font-weight: 600; color: var(--muted); font-size: 12.5px; }
.profiles td.failed { font-weight: 700; }
#filters { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 18px; padding: 10px 14px; margin-bottom: 12px;
  background: var(--soft); border: 1px solid var(--line); border-radius: 8px; }
#filters fieldset { border: 0; margin: 0; padding: 0; display: flex; gap: 14px; }
#filters legend { float: left; margin-right: 8px; color: var(--muted); }
#filters label { color: var(--muted); } #filters fieldset label { font-weight: 600; }
#filters fieldset label.passed { color: var(--pass); } #filters fieldset label.failed { color: var(--fail); }
#filters fieldset label.skipped { color: var(--skip); }
#filters select, #filters input[type=search] { font: inherit; max-width: 220px; padding: 2px 6px; border: 1px solid var(--line); border-radius: 6px; }
#shown { margin-left: auto; color: var(--muted); }
.results { width: 100%; }
.results th, .results td { text-align: left; padding: 5px 10px; vertical-align: top; }
.results thead th { border-bottom: 2px solid var(--line); position: sticky; top: 0; background: #fff; }
.results tbody { border-bottom: 1px solid var(--line); }
.results tbody:hover { background: var(--soft); }
.results td.name { font-weight: 600; white-space: nowrap; } .results tr.failed td.name { color: var(--fail); }
.results tr.note td { padding-top: 0; padding-left: 24px; }
.num { text-align: right !important; white-space: nowrap; }
.results td:nth-child(2), .results td:nth-child(5), .results td:nth-child(6) { white-space: nowrap; }
.tag { display: inline-block; margin: 0 4px 2px 0; padding: 0 6px; border-radius: 10px; background: #eef1f4; color: #3d444d; font-size: 12px; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.reason { margin: 0; color: var(--skip); } .reason::before { content: "skipped: "; font-weight: 600; }
.reason.not-applicable::before { content: "not applicable: "; }
.cleanup { margin: 2px 0 0; color: var(--fail); }
details { margin: 0 0 6px; }
summary { cursor: pointer; color: var(--fail); }
summary b { font-weight: 700; }
.evidence { margin: 8px 0 4px 14px; padding: 4px 0 4px 14px; border-left: 3px solid var(--fail-bg); }
.evidence p { margin: 4px 0; } .file, .description { color: var(--muted); }
pre { margin: 6px 0; padding: 8px 10px; background: var(--soft); border: 1px solid var(--line); border-radius: 6px;
  white-space: pre-wrap; overflow-wrap: anywhere; }
pre.message { background: var(--fail-bg); border-color: #ffcecb; color: #82071e; }
.breaks { margin: 8px 0; padding: 6px 10px; border-left: 3px solid var(--fail); }
.breaks ul { margin: 4px 0 0; padding-left: 18px; }
.guarantees th, .guarantees td { text-align: left; padding: 2px 12px 2px 0; vertical-align: top; }
.dots .dot { display: inline-block; width: 10px; height: 10px; margin: 1px; border-radius: 2px; }
.dot.passed { background: var(--pass); } .dot.failed, .dot.known-failure { background: var(--fail); }
.dot.skipped { background: var(--skip-bg); outline: 1px solid var(--skip); }
.steps td { padding: 2px 10px 2px 0; } .steps .mark { font-weight: 600; }
.steps tr.passed .mark { color: var(--pass); } .steps tr.failed { color: var(--fail); }
.steps tr.passed { color: inherit; }
.answers { margin: 4px 0 8px; font-size: 12.5px; }
.answers th, .answers td { padding: 1px 14px 1px 0; text-align: left; vertical-align: top; }
.answers thead th { padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.answers tbody th { font-weight: normal; color: var(--muted); white-space: nowrap; }
.answers td { font-family: var(--mono); overflow-wrap: anywhere; } .answers i { color: var(--muted); }
.answers pre { margin: 0; }
"#;

/// Hides the scenarios the filters leave out; the form stays hidden without it.
const SCRIPT: &str = r#"
const form = document.getElementById("filters");
const groups = [...document.querySelectorAll("tbody[data-status]")];
function apply() {
  const statuses = [...form.querySelectorAll("input[name=status]:checked")].map(i => i.value);
  const profile = form.profile.value, feature = form.feature.value;
  const text = form.elements.name.value.trim().toLowerCase();
  let shown = 0;
  for (const g of groups) {
    const d = g.dataset;
    const keep = statuses.includes(d.status) && (!profile || d.profile === profile)
      && (!feature || d.features.split(" ").includes(feature)) && d.name.toLowerCase().includes(text);
    g.hidden = !keep;
    shown += keep;
  }
  document.getElementById("shown").textContent = shown + " of " + groups.length + " scenarios shown";
}
form.hidden = false;
form.addEventListener("input", apply);
form.addEventListener("submit", e => e.preventDefault());
apply();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> String {
        render(&super::super::tests::sample())
    }

    #[test]
    fn page_is_self_contained() {
        let page = page();
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains("<style>") && page.contains("<script>"));
        for external in ["src=\"http", "href=\"http", "<link", "@import", "url("] {
            assert!(!page.contains(external), "page loads {external}...");
        }
    }

    #[test]
    fn the_guarantees_say_which_clause_holds_with_a_mark_per_scenario() {
        let mut report = super::super::tests::sample();
        let holds = render(&report);
        assert!(holds.contains(">V3 Trust</th><td><span class=\"badge passed\">holds</span>"), "only demo proves V3");
        // All three prove V3: one passed, one failed, one skipped.
        for scenario in &mut report.scenarios {
            scenario.contract = vec!["V3".into()];
        }
        let page = render(&report);
        let row = page.split("<tr><th title=\"Trust.").nth(1).expect("a row for V3");
        let row = &row[..row.find("</tr>").unwrap()];
        assert!(row.contains(">V3 Trust</th>"), "{row}");
        assert!(row.contains("<span class=\"badge failed\">broken</span>"), "{row}");
        for (name, verdict) in [("demo", "passed"), ("broken", "failed"), ("later", "skipped")] {
            assert!(row.contains(&format!("<span class=\"dot {verdict}\" title=\"{name}: {verdict}\">")), "{row}");
        }
        assert!(page.find("<h2>Guarantees</h2>").unwrap() < page.find("<table class=\"results\">").unwrap());
    }

    #[test]
    fn every_scenario_is_listed_failures_first() {
        let page = page();
        for name in ["demo", "broken", "later"] {
            assert!(page.contains(&format!("data-name=\"{name}\"")), "{name} missing");
        }
        let failed = page.find("data-status=\"failed\"").unwrap();
        assert!(failed < page.find("data-status=\"passed\"").unwrap());
        assert!(page.contains("<b>1</b> passed") && page.contains("<b>1</b> failed"));
        assert!(page.contains("<tr><th>core</th><td class=\"passed\">1</td>"), "profile counts missing");
    }

    #[test]
    fn failure_details_escape_the_message_and_show_the_steps() {
        let page = page();
        assert!(!page.contains("<&>"));
        // The first line ends in a key cut short: it must not swallow the page up to the key's end.
        assert!(page.contains("<a href=\"diagnostics/broken.md\">"), "the diagnostics page is linked");
        assert!(page.contains("<dd>example proxy v1.0.0</dd>"), "the implementation is named");
        let message = "expected status 200, got 503 &lt;&amp;&gt; [private key redacted]";
        assert!(page.contains(&format!("<details open><summary><b>step 1 (request)</b>: {message}</summary>")));
        assert!(page.contains(&format!("<pre class=\"message\">{message}</pre>")));
        assert_eq!(page.matches("<details").count(), 1, "only the failure has details");
        assert!(page.contains("<td>GET /</td><td class=\"mark\">ok</td><td class=\"num\">0.9s</td>"));
    }

    #[test]
    fn evidence_shows_answers_and_what_the_backend_saw() {
        let mut report = super::super::tests::sample();
        let echo: BackendEcho = serde_json::from_value(serde_json::json!({
            "backend": "echo", "requestId": "q2", "scheme": "https", "sni": "<sni>", "tlsVersion": "TLSv1.3",
            "cipher": "TLS_AES_128_GCM_SHA256", "alpn": "", "httpVersion": "HTTP/1.1", "host": "h", "path": "/",
            "port": "8443", "clientVerify": "NONE", "clientSubject": "", "clientIssuer": "", "clientSerial": "",
            "clientSha1": "",
        }))
        .unwrap();
        let failure = report.scenarios.iter_mut().find_map(|s| s.failure.as_mut()).unwrap();
        failure.answers = vec![
            Answer {
                request_id: "q1".into(),
                status: None,
                body: String::new(),
                headers: Default::default(),
                echo: None,
                error: Some("reset".into()),
                closed: true,
                refused: false,
            },
            Answer {
                request_id: "q2".into(),
                status: Some(200),
                body: "{}".into(),
                headers: Default::default(),
                echo: Some(echo),
                error: None,
                closed: false,
                refused: false,
            },
        ];
        let page = render(&report);
        assert!(page.contains("<th><code>q1</code></th><th><code>q2</code></th>"));
        assert!(page.contains("<tr><th>status</th><td>no response</td><td><b>200</b></td></tr>"));
        assert!(page.contains("<tr><th>transport error</th><td>reset</td><td></td></tr>"));
        assert!(page.contains("<tr><th>SNI</th><td><i>no echo</i></td><td>&lt;sni&gt;</td></tr>"));
        assert!(page.contains("<tr><th>ALPN</th><td><i>no echo</i></td><td><i>none</i></td></tr>"));
        assert!(page.contains("<tr><th>client SHA-1</th>"));
    }

    #[test]
    fn not_applicable_rows_say_so() {
        let mut report = super::super::tests::sample();
        report.scenarios[2].not_applicable = true;
        assert!(render(&report).contains("<p class=\"reason not-applicable\">"));
    }

    #[test]
    fn skipped_rows_show_their_reason() {
        assert!(
            page().contains("<p class=\"reason\">the implementation does not claim feature upstream-validation</p>")
        );
    }

    #[test]
    fn filters_cover_status_profile_feature_and_name() {
        let page = page();
        for status in ["passed", "failed", "skipped"] {
            assert!(page.contains(&format!("name=\"status\" value=\"{status}\" checked")), "{status} filter");
        }
        assert!(page.contains("<select name=\"profile\"><option value=\"\">all</option><option>core</option>"));
        assert!(
            page.contains(
                "<select name=\"feature\"><option value=\"\">all</option><option>upstream-validation</option>"
            )
        );
        assert!(page.contains("<input type=\"search\" name=\"name\""));
        assert!(page.contains("data-features=\"upstream-validation\""));
    }

    #[test]
    fn escape_covers_text_and_attributes() {
        assert_eq!(
            escape(r#"<a href="x" title='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(escape("a -----BEGIN PRIVATE KEY-----\nMII"), "a [private key redacted]");
    }
}
