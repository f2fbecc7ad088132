//! Reading and checking scenario files: [`load_file`], [`load_dir`].
//!
//! Every problem found is reported, each with file, line and column, before anything is
//! applied to a cluster: YAML and type errors, dangling references between PKI entries and
//! backends, unknown `${...}` names, manifests that are not Kubernetes objects.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::{Location, Spanned};

use super::template::{self, known_names, suggestion};
use super::{Feature, KeyAlgorithmSpec, RequestStep, Scenario, StatusCodes, Step};
use crate::fixture::REQUEST_ID_HEADER;

/// A scenario file that loaded cleanly.
#[derive(Debug)]
pub struct LoadedScenario {
    pub path: PathBuf,
    pub scenario: Scenario,
    /// SHA-256 of the file, hex: identifies the exact scenario a report is about.
    pub sha256: String,
}

impl LoadedScenario {
    pub fn name(&self) -> &str {
        &self.scenario.name.value
    }
}

/// One problem in one scenario file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub path: PathBuf,
    /// 1-based; `None` for problems of the whole file (unreadable, duplicate scenario name).
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for LoadError {}

/// Loads every `*.yaml` file below `dir` (recursively, in path order).
///
/// # Errors
/// Every problem in every file, and scenario names used twice.
pub fn load_dir(dir: &Path) -> Result<Vec<LoadedScenario>, Vec<LoadError>> {
    let mut files = Vec::new();
    let mut visited = Vec::new();
    let mut errors = Vec::new();
    collect_yaml(dir, &mut files, &mut visited, &mut errors).map_err(|e| {
        vec![LoadError { path: dir.to_owned(), position: None, message: format!("cannot list scenarios: {e}") }]
    })?;
    if !errors.is_empty() {
        return Err(errors);
    }
    files.sort();
    if files.is_empty() {
        return Err(vec![LoadError {
            path: dir.to_owned(),
            position: None,
            message: "no scenario files (*.yaml) found".into(),
        }]);
    }
    let mut loaded = Vec::new();
    for file in files {
        match load_file(&file) {
            Ok(scenario) => loaded.push(scenario),
            Err(mut e) => errors.append(&mut e),
        }
    }
    check_unique_names(&loaded, &mut errors);
    if errors.is_empty() { Ok(loaded) } else { Err(errors) }
}

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/catalog.rs"));
}

/// Where the built-in catalog's scenarios say they come from: `scenarios/<path>`.
pub const BUILTIN_DIR: &str = "scenarios";

/// The catalog built into this binary (`scenarios/` of the source it was built from), so that
/// an installed binary runs it from any directory. Messages name the files as
/// `scenarios/<area>/<file>.yaml`, as in the source tree.
///
/// # Errors
/// As [`load_dir`] (a binary built from a broken catalog).
pub fn load_builtin() -> Result<Vec<LoadedScenario>, Vec<LoadError>> {
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    for (path, text) in builtin::BUILTIN {
        match parse(&Path::new(BUILTIN_DIR).join(path), text) {
            Ok(scenario) => loaded.push(scenario),
            Err(mut e) => errors.append(&mut e),
        }
    }
    check_unique_names(&loaded, &mut errors);
    if errors.is_empty() { Ok(loaded) } else { Err(errors) }
}

/// Adds an error for each scenario whose name an earlier one already has.
fn check_unique_names(loaded: &[LoadedScenario], errors: &mut Vec<LoadError>) {
    let mut seen: Vec<(&str, &Path)> = Vec::new();
    for s in loaded {
        if let Some((_, first)) = seen.iter().find(|(name, _)| *name == s.name()) {
            let (line, column) = position(&s.scenario.name.referenced);
            errors.push(LoadError {
                path: s.path.clone(),
                position: Some((line, column)),
                message: format!("scenario name {:?} is already used by {}", s.name(), first.display()),
            });
        } else {
            seen.push((s.name(), &s.path));
        }
    }
}

/// The most directory entries a scenario directory may hold, all levels together: a
/// catalog has a few hundred; `--scenarios /` would otherwise walk the whole machine.
const MAX_ENTRIES: usize = 20_000;
/// The deepest a scenario file may lie below the scenario directory.
const MAX_DEPTH: usize = 16;

/// Collects the `*.yaml` files below `dir`, following symbolic links to directories but
/// reading each directory once: one reached again (a symlink loop, or two links to it) is
/// reported once and not entered. Hidden entries (`.git`, an editor's `.#x.yaml` lock) are
/// passed over. A subdirectory that cannot be read is reported under its own path.
fn collect_yaml(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    visited: &mut Vec<(u64, u64)>,
    errors: &mut Vec<LoadError>,
) -> std::io::Result<()> {
    let mut entries = 0;
    collect_below(dir, 0, &mut entries, out, visited, errors)?;
    if entries > MAX_ENTRIES {
        errors.push(LoadError {
            path: dir.to_owned(),
            position: None,
            message: format!(
                "more than {MAX_ENTRIES} files and directories below it; is this really a directory of scenarios?"
            ),
        });
    }
    Ok(())
}

fn collect_below(
    dir: &Path,
    depth: usize,
    entries: &mut usize,
    out: &mut Vec<PathBuf>,
    visited: &mut Vec<(u64, u64)>,
    errors: &mut Vec<LoadError>,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir)?;
    if visited.contains(&(meta.dev(), meta.ino())) {
        errors.push(LoadError {
            path: dir.to_owned(),
            position: None,
            message: "this directory was already read through another path (a symbolic link loop?); not read again"
                .into(),
        });
        return Ok(());
    }
    visited.push((meta.dev(), meta.ino()));
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    paths.sort();
    for path in paths {
        *entries += 1;
        if *entries > MAX_ENTRIES {
            return Ok(());
        }
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            continue;
        }
        if path.is_dir() {
            if depth + 1 > MAX_DEPTH {
                errors.push(LoadError {
                    path,
                    position: None,
                    message: format!("more than {MAX_DEPTH} directories deep below the scenario directory; not read"),
                });
                continue;
            }
            if let Err(e) = collect_below(&path, depth + 1, entries, out, visited, errors) {
                errors.push(LoadError { path, position: None, message: format!("cannot list scenarios: {e}") });
            }
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// The largest scenario or config file read: far above any real one (the largest scenario
/// is a few kilobytes), far below what would strain memory.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a scenario or config file: a regular file (not a FIFO or a device, which could
/// block or never end) of at most [`MAX_FILE_BYTES`], in UTF-8.
///
/// # Errors
/// In the project's words, without the path (the caller names it).
pub fn read_text_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file (a directory, FIFO or device); only regular files are read".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("{} bytes is too large; files are limited to {MAX_FILE_BYTES} bytes", meta.len()));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    // The file may grow after the check: never read more than the limit.
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("files are limited to {MAX_FILE_BYTES} bytes"));
    }
    String::from_utf8(bytes)
        .map_err(|e| format!("not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()))
}

/// Loads and checks one scenario file.
///
/// # Errors
/// Every problem found in the file.
pub fn load_file(path: &Path) -> Result<LoadedScenario, Vec<LoadError>> {
    let source =
        read_text_file(path).map_err(|message| vec![LoadError { path: path.to_owned(), position: None, message }])?;
    parse(path, &source)
}

/// Parses and checks scenario text that came from `path`.
///
/// # Errors
/// Every problem found.
pub fn parse(path: &Path, source: &str) -> Result<LoadedScenario, Vec<LoadError>> {
    parse_as(path, source, false)
}

/// [`parse`] for a case the differential runs generate ([`crate::generate`]), which may
/// `observe` instead of asserting.
///
/// # Errors
/// As [`parse`].
pub fn parse_generated(path: &Path, source: &str) -> Result<LoadedScenario, Vec<LoadError>> {
    parse_as(path, source, true)
}

fn parse_as(path: &Path, source: &str, generated: bool) -> Result<LoadedScenario, Vec<LoadError>> {
    if source.lines().all(|line| line.trim().is_empty() || line.trim_start().starts_with('#')) {
        return Err(vec![LoadError {
            path: path.to_owned(),
            position: None,
            message: "the file has no content; a scenario needs at least name, description, contract and steps".into(),
        }]);
    }
    let scenario: Scenario = serde_saphyr::from_str(source).map_err(|e| vec![yaml_error(path, source, &e, (0, 0))])?;
    let mut check = Checker { path, source, errors: Vec::new(), generated };
    check.scenario(&scenario);
    if check.errors.is_empty() {
        Ok(LoadedScenario { path: path.to_owned(), scenario, sha256: sha256_hex(source.as_bytes()) })
    } else {
        check.errors.sort_by_key(|e| e.position);
        Err(check.errors)
    }
}

struct Checker<'a> {
    path: &'a Path,
    source: &'a str,
    errors: Vec<LoadError>,
    /// A generated case, which may `observe`.
    generated: bool,
}

impl Checker<'_> {
    fn error(&mut self, at: (usize, usize), message: String) {
        self.errors.push(LoadError { path: self.path.to_owned(), position: Some(at), message });
    }

    fn scenario(&mut self, scenario: &Scenario) {
        let name = &scenario.name;
        if !is_dns_label(&name.value) || name.value.len() > 40 {
            self.error(
                position(&name.referenced),
                format!(
                    "scenario name {:?} must be lowercase letters, digits and '-', at most 40 characters",
                    name.value
                ),
            );
        }
        if scenario.contract.is_empty() {
            self.error(
                position(&name.referenced),
                "`contract` is empty: a scenario proves at least one clause of docs/contract.md".into(),
            );
        }
        for (index, clause) in scenario.contract.iter().enumerate() {
            if scenario.contract[..index].iter().any(|earlier| earlier.value == clause.value) {
                self.error(position(&clause.referenced), format!("contract clause {:?} is listed twice", clause.value));
            }
        }
        for (index, feature) in scenario.features.iter().enumerate() {
            if scenario.features[..index].contains(feature) {
                self.error(position(&name.referenced), format!("feature {} is listed twice", feature.name()));
            }
        }
        for clause in &scenario.contract {
            let id = clause.value.as_str();
            let valid = id.len() >= 2
                && id.starts_with(|c: char| c.is_ascii_uppercase())
                && id[1..].chars().all(|c| c.is_ascii_digit());
            if !valid {
                self.error(
                    position(&clause.referenced),
                    format!("contract clause {id:?} is not of the form P1, V4, ..."),
                );
            } else if !contract_clauses().contains(&id) {
                self.error(
                    position(&clause.referenced),
                    format!(
                        "contract clause {id:?} is not in docs/contract.md (it has {})",
                        contract_clauses().join(", ")
                    ),
                );
            }
        }
        if scenario.description.trim().is_empty() {
            self.error(
                position(&name.referenced),
                "`description` is empty: say what the scenario proves, for the reports and the catalog page".into(),
            );
        }
        if scenario.steps.is_empty() {
            self.error(position(&name.referenced), "a scenario needs at least one step".into());
        }
        if let Some(alone) = &scenario.alone
            && alone.value.trim().is_empty()
        {
            self.error(
                position(&alone.referenced),
                "`alone` needs the reason the scenario must run alone: what it disturbs, and where".into(),
            );
        }
        let pki = self.pki(scenario);
        self.backends(scenario, &pki);
        self.templates(scenario, &pki);
        self.namespaces(scenario);
        self.install_wide(scenario);
        for step in &scenario.steps {
            if let Step::ExpectStatus(expect) = step {
                self.own_namespace_reference(
                    scenario,
                    expect.kind.as_deref(),
                    expect.namespace.as_ref(),
                    "expectStatus",
                );
                let fields = [expect.api_version.as_deref(), expect.kind.as_deref(), Some(expect.name.as_str())];
                if fields.iter().flatten().any(|field| field.trim().is_empty()) {
                    self.error(
                        position(&expect.status.referenced),
                        "an `expectStatus` step has an empty apiVersion, kind or name".into(),
                    );
                }
            }
            match step {
                Step::Apply(manifest) => self.manifest(scenario, manifest),
                Step::ApplyRejected(rejected) => {
                    self.manifest(scenario, &rejected.manifest);
                    if rejected.message_contains.trim().is_empty() {
                        self.error(
                            position(&rejected.manifest.referenced),
                            "`messageContains` is empty, so any refusal would pass: give words of the expected one"
                                .into(),
                        );
                    }
                }
                Step::Delete(object) => {
                    self.own_namespace_reference(scenario, Some(&object.kind), object.namespace.as_ref(), "delete");
                    if [&object.api_version, &object.kind, &object.name].iter().any(|field| field.trim().is_empty()) {
                        self.error(
                            position(&name.referenced),
                            "a `delete` step has an empty apiVersion, kind or name".into(),
                        );
                    }
                }
                Step::ExpectStatus(expect) if expect.status.value.as_object().is_none_or(serde_json::Map::is_empty) => {
                    self.error(
                        position(&expect.status.referenced),
                        "`status` must be a mapping of the status fields to check, such as `currentStatus: valid`"
                            .into(),
                    );
                }
                Step::Observe(paths) if !self.generated => {
                    self.error(
                        position(&paths.referenced),
                        "`observe` asserts nothing: it is for the differential runs' generated cases, not for scenario \
                         files"
                            .into(),
                    );
                }
                Step::Request(request) => {
                    if let Some(consecutive) = &request.consecutive
                        && !(1..=100).contains(&consecutive.value)
                    {
                        self.error(
                            position(&consecutive.referenced),
                            format!("`consecutive` must be between 1 and 100, not {}", consecutive.value),
                        );
                    }
                    self.shared_by(scenario, request);
                    self.request(scenario, request);
                }
                Step::Together(requests) => {
                    if requests.value.len() < 2 {
                        self.error(
                            position(&requests.referenced),
                            "`together` needs two or more requests; a single one is a `request` step".into(),
                        );
                    }
                    for request in &requests.value {
                        let alone = [
                            request.consecutive.as_ref().map(|c| (&c.referenced, "consecutive")),
                            request.shared_by.first().map(|b| (&b.referenced, "sharedBy")),
                        ];
                        for (at, field) in alone.into_iter().flatten() {
                            self.error(
                                position(at),
                                format!(
                                    "`{field}` belongs to a `request` step; `together` counts rounds of its requests"
                                ),
                            );
                        }
                        if let Some(mirror) = &request.mirror {
                            let at = mirror.name.as_ref().map_or(&requests.referenced, |n| &n.referenced);
                            self.error(
                                position(at),
                                "`mirror` belongs to a `request` step, not to a request of `together`".into(),
                            );
                        }
                        self.request(scenario, request);
                    }
                }
                _ => {}
            }
        }
    }

    /// A request's own checks, in a `request` step or in `together`.
    fn request(&mut self, scenario: &Scenario, request: &RequestStep) {
        self.request_headers(request);
        self.request_target(request);
        self.request_tls(scenario, request);
        let named = [&request.expect.backend, &request.mirror];
        for name in named.into_iter().flatten().filter_map(|b| b.name.as_ref()) {
            if !name.value.contains("${") && !scenario.backends.iter().any(|b| b.name.value == name.value) {
                self.error(
                    position(&name.referenced),
                    format!("backend {:?} is not declared under `backends`", name.value),
                );
            }
        }
        if let (Some(reached), Some(_)) = (&request.expect.backend_reached, &request.expect.backend)
            && !reached.value
        {
            self.error(
                position(&reached.referenced),
                "`backendReached: false` contradicts the `backend` expectation beside it".into(),
            );
        }
    }

    /// `sharedBy` names two or more declared backends, leaves `expect.backend.name` unset and
    /// comes with enough consecutive answers.
    fn shared_by(&mut self, scenario: &Scenario, request: &RequestStep) {
        let Some(first) = request.shared_by.first() else { return };
        if request.shared_by.len() < 2 {
            self.error(position(&first.referenced), "`sharedBy` needs at least two backends".into());
        }
        for (index, name) in request.shared_by.iter().enumerate() {
            if request.shared_by[..index].iter().any(|earlier| earlier.value == name.value) {
                self.error(
                    position(&name.referenced),
                    format!("backend {:?} is listed twice in `sharedBy`", name.value),
                );
            } else if !scenario.backends.iter().any(|b| b.name.value == name.value) {
                self.error(
                    position(&name.referenced),
                    format!("backend {:?} is not declared under `backends`", name.value),
                );
            }
        }
        if let Some(name) = request.expect.backend.as_ref().and_then(|b| b.name.as_ref()) {
            self.error(
                position(&name.referenced),
                "`expect.backend.name` contradicts `sharedBy`: the answers come from several backends".into(),
            );
        }
        if crate::traffic::wants_backend(&request.expect) != Some(true) {
            self.error(
                position(&first.referenced),
                "`sharedBy` needs answers from backends: give `expect.backend` (without a name)".into(),
            );
        }
        let needed = 10 * request.shared_by.len() as u32;
        if request.consecutive.as_ref().is_none_or(|c| c.value < needed) {
            let at = request.consecutive.as_ref().map_or(&first.referenced, |c| &c.referenced);
            self.error(
                position(at),
                format!(
                    "`sharedBy` with {} backends needs `consecutive` of at least {needed}, so that a fair share \
                     cannot miss one by chance",
                    request.shared_by.len()
                ),
            );
        }
    }

    /// Request header names must be HTTP tokens other than the ones the harness sets, and
    /// values must fit on one line; errors point at the value.
    fn request_headers(&mut self, request: &RequestStep) {
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in &request.headers {
            let token =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            let lowercase = name.to_ascii_lowercase();
            let problem = if !token {
                Some(format!("request header name {name:?} is not an HTTP token"))
            } else if seen.contains(&lowercase) {
                Some(format!("request header {name:?} is given twice (header names ignore case)"))
            } else if matches!(lowercase.as_str(), "content-length" | "transfer-encoding") {
                Some(format!("{name} describes a request body, and the harness sends none"))
            } else if value.value.len() > MAX_REQUEST_LINE_PART {
                Some(format!(
                    "the value of request header {name:?} is longer than 8192 characters, more than a proxy takes"
                ))
            } else if name.eq_ignore_ascii_case("host") {
                Some("set the Host header with the request's `host`, not in `headers`".to_string())
            } else if name.eq_ignore_ascii_case(REQUEST_ID_HEADER) {
                Some(format!("{REQUEST_ID_HEADER} is set by the harness"))
            } else if value.value.contains(['\r', '\n']) {
                Some(format!("the value of request header {name:?} must be one line"))
            } else if let Some(c) = value.value.chars().find(|&c| c != '\t' && c.is_control()) {
                Some(format!(
                    "the value of request header {name:?} holds the control character U+{:04X}, which HTTP does not allow",
                    u32::from(c)
                ))
            } else {
                unsendable_reference(&value.value, "a request header")
            };
            seen.push(lowercase);
            if let Some(problem) = problem {
                self.error(position(&value.referenced), problem);
            }
        }
    }

    /// The host must be a host name (with `${...}` references) and the path must start with `/`:
    /// anything else could only fail once the run has spent its time limit.
    fn request_target(&mut self, request: &RequestStep) {
        if let Some(host) = &request.host {
            let literal = without_references(&host.value);
            let valid = !host.value.is_empty()
                && literal.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*' | b':'));
            let port = literal.rsplit_once(':').map(|(_, port)| port);
            if let Some(problem) = unsendable_reference(&host.value, "a request's host") {
                self.error(position(&host.referenced), problem);
            } else if let Some(problem) = valid.then(|| host_name_problem(&host.value)).flatten() {
                let shown = crate::cluster::truncate(&host.value, 80);
                self.error(position(&host.referenced), format!("request host {shown:?} {problem}"));
            } else if valid && port.is_some_and(|p| p.parse::<u16>().is_err() || p == "0") {
                self.error(
                    position(&host.referenced),
                    format!("request host {:?} has a port that is not a number from 1 to 65535", host.value),
                );
            } else if !valid {
                self.error(
                    position(&host.referenced),
                    format!(
                        "request host {:?} is not a host name (letters, digits, '-', '.', a port, and ${{...}} references)",
                        host.value
                    ),
                );
            }
        }
        if let Some(path) = &request.path {
            let problem = if !path.value.starts_with('/') {
                Some("must start with '/'")
            } else if path.value.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || !b.is_ascii()) {
                Some("must be ASCII without spaces or control characters (percent-encode the others)")
            } else if path.value.contains('#') {
                Some("holds a '#': a fragment is never sent (percent-encode it as %23)")
            } else if path.value.len() > MAX_REQUEST_LINE_PART {
                Some("is longer than 8192 characters, more than a proxy takes")
            } else {
                None
            };
            if let Some(problem) = problem {
                let shown = crate::cluster::truncate(&path.value, 80);
                self.error(position(&path.referenced), format!("request path {shown:?} {problem}"));
            } else if let Some(problem) = unsendable_reference(&path.value, "a request's path") {
                self.error(position(&path.referenced), problem);
            }
        }
    }

    /// A request over TLS trusts a declared CA, offers some TLS version, and its scenario
    /// claims feature `tcp-proxy` (so that targets without a TLS address skip it). Only such a
    /// request can have its handshake refused.
    fn request_tls(&mut self, scenario: &Scenario, request: &RequestStep) {
        let Some(tls) = &request.tls else {
            if request.expect.status == StatusCodes::Refused {
                let at = request.path.as_ref().or(request.host.as_ref()).map(|s| &s.referenced);
                let message = "`status: refused` expects a TLS handshake the proxy refuses: give the request `tls`";
                match at {
                    Some(at) => self.error(position(at), message.into()),
                    None => self.errors.push(LoadError {
                        path: self.path.to_owned(),
                        position: None,
                        message: format!("a `request` step: {message}"),
                    }),
                }
            }
            return;
        };
        let trust = &tls.trust;
        if tls.versions.as_ref().is_some_and(Vec::is_empty) {
            self.error(position(&trust.referenced), "`tls.versions: []`: the client would offer no TLS version".into());
        }
        match scenario.pki.iter().find(|entry| entry.name.value == trust.value) {
            None => self
                .error(position(&trust.referenced), format!("PKI entry {:?} is not declared under `pki`", trust.value)),
            Some(entry) if !entry.ca => self.error(
                position(&trust.referenced),
                format!("PKI entry {:?} is not a CA (`ca: true`): a request can only trust a CA", trust.value),
            ),
            Some(_) => {}
        }
        if !scenario.features.contains(&Feature::TcpProxy) {
            self.error(
                position(&trust.referenced),
                "a request over TLS needs feature `tcp-proxy` in `features`, so that targets without a TLS address skip it"
                    .into(),
            );
        }
    }

    /// Checks PKI entries; returns their names.
    fn pki(&mut self, scenario: &Scenario) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        if let Some(extra) = scenario.pki.get(MAX_PKI_ENTRIES) {
            self.error(
                position(&extra.name.referenced),
                format!(
                    "{} PKI entries; a scenario may have at most {MAX_PKI_ENTRIES} (each is a key made for every run)",
                    scenario.pki.len()
                ),
            );
        }
        for cert in &scenario.pki {
            let name = &cert.name;
            if names.contains(&name.value) {
                self.error(position(&name.referenced), format!("PKI entry {:?} is defined twice", name.value));
            }
            if let Some(issuer) = &cert.issuer {
                match scenario.pki.iter().position(|c| c.name.value == issuer.value) {
                    None => self
                        .error(position(&issuer.referenced), format!("issuer {:?} is not a PKI entry", issuer.value)),
                    Some(_) if !names.contains(&issuer.value) => self.error(
                        position(&issuer.referenced),
                        format!("issuer {:?} must be defined before {:?}", issuer.value, name.value),
                    ),
                    Some(i) if !scenario.pki[i].ca => self.error(
                        position(&issuer.referenced),
                        format!("issuer {:?} is not a CA (set `ca: true` on it)", issuer.value),
                    ),
                    Some(_) => {}
                }
            }
            if cert.expired && cert.not_yet_valid {
                self.error(
                    position(&name.referenced),
                    format!("PKI entry {:?} cannot be both `expired` and `notYetValid`", name.value),
                );
            }
            if !is_pki_name(&name.value) {
                self.error(
                    position(&name.referenced),
                    format!(
                        "PKI entry name {:?} must be letters, digits, '-' and '_' (at most 63, starting and ending \
                         with a letter or digit): it stands in references such as ${{pki.NAME.cert}}",
                        crate::cluster::truncate(&name.value, 80)
                    ),
                );
            }
            if let Some(common_name) = &cert.common_name {
                let problem = if common_name.chars().count() > 64 {
                    Some("is longer than 64 characters, the most X.509 allows")
                } else if common_name.chars().any(char::is_control) {
                    Some("holds a control character")
                } else {
                    None
                };
                if let Some(problem) = problem {
                    self.error(
                        position(&name.referenced),
                        format!("the commonName of PKI entry {:?} {problem}", name.value),
                    );
                }
            }
            for (index, dns_name) in cert.dns_names.iter().enumerate() {
                if cert.dns_names[..index].iter().any(|earlier| earlier.value.eq_ignore_ascii_case(&dns_name.value)) {
                    self.error(
                        position(&dns_name.referenced),
                        format!("DNS name {:?} is listed twice", dns_name.value),
                    );
                }
            }
            for uri in &cert.uris {
                if let Some(problem) = uri_problem(&uri.value) {
                    self.error(
                        position(&uri.referenced),
                        format!("URI {:?} {problem}", crate::cluster::truncate(&uri.value, 80)),
                    );
                }
            }
            for ip in &cert.ip_addresses {
                if ip.value.parse::<std::net::IpAddr>().is_err() {
                    self.error(
                        position(&ip.referenced),
                        format!("IP address {:?} is not an IPv4 or IPv6 address", ip.value),
                    );
                }
            }
            if let Some(extra) = cert.dns_names.get(MAX_DNS_NAMES) {
                self.error(
                    position(&extra.referenced),
                    format!(
                        "PKI entry {:?} has {} DNS names; at most {MAX_DNS_NAMES} fit in a certificate a proxy will take",
                        name.value,
                        cert.dns_names.len()
                    ),
                );
            }
            for dns_name in &cert.dns_names {
                if !is_certificate_dns_name(&dns_name.value) {
                    self.error(
                        position(&dns_name.referenced),
                        format!(
                            "DNS name {:?} is not a DNS name (labels of letters, digits, '-' and '_', '*' wildcards, at most 253 characters)",
                            dns_name.value
                        ),
                    );
                }
            }
            names.push(name.value.clone());
        }
        names
    }

    fn backends(&mut self, scenario: &Scenario, pki: &[String]) {
        let mut names = BTreeSet::new();
        for backend in &scenario.backends {
            if !is_dns_label(&backend.name.value) {
                self.error(
                    position(&backend.name.referenced),
                    format!("backend name {:?} must be a DNS label", backend.name.value),
                );
            }
            if !names.insert(backend.name.value.as_str()) {
                self.error(
                    position(&backend.name.referenced),
                    format!("backend {:?} is defined twice", backend.name.value),
                );
            }
            let install_ca = |c: &&Spanned<String>| c.value != INSTALL_CLIENT_CA;
            let references = std::iter::once(("certificate", &backend.certificate))
                .chain(backend.chain.iter().map(|c| ("chain entry", c)))
                .chain(
                    backend
                        .client_certificate
                        .iter()
                        .map(|c| ("client certificate CA", &c.ca))
                        .filter(|(_, c)| install_ca(c)),
                );
            if let Some(namespace) = &backend.namespace
                && !scenario.namespaces.iter().any(|n| n.value == namespace.value)
            {
                self.error(
                    position(&namespace.referenced),
                    format!("backend namespace {:?} is not one of the scenario's `namespaces`", namespace.value),
                );
            }
            for (what, reference) in references {
                if !pki.contains(&reference.value) {
                    self.error(
                        position(&reference.referenced),
                        format!("{what} {:?} is not a PKI entry", reference.value),
                    );
                }
            }
            if let Some(client) = &backend.client_certificate
                && scenario.pki.iter().any(|entry| entry.name.value == client.ca.value && !entry.ca)
            {
                self.error(
                    position(&client.ca.referenced),
                    format!("client certificate CA {:?} is not a CA (set `ca: true` on it)", client.ca.value),
                );
            }
            if let Some(ciphers) = &backend.tls_ciphers {
                let key =
                    scenario.pki.iter().find(|e| e.name.value == backend.certificate.value).map(|e| e.key_algorithm);
                let rsa = key == Some(KeyAlgorithmSpec::Rsa2048);
                if ciphers.is_empty() {
                    self.error(
                        position(&backend.name.referenced),
                        format!(
                            "backend {:?} has `tlsCiphers: []`: nginx would accept no TLS 1.2 suite",
                            backend.name.value
                        ),
                    );
                } else if key.is_some() && !ciphers.iter().any(|c| c.needs_rsa() == rsa) {
                    let (has, needs) = if rsa { ("an RSA", "ECDSA") } else { ("an ECDSA", "RSA") };
                    self.error(
                        position(&backend.name.referenced),
                        format!(
                            "backend {:?} accepts only TLS 1.2 suites that need {needs} keys, and its certificate \
                             {:?} has {has} key (`keyAlgorithm`): no TLS 1.2 handshake could complete",
                            backend.name.value, backend.certificate.value
                        ),
                    );
                }
            }
            if backend.tls_versions.as_ref().is_some_and(Vec::is_empty) {
                self.error(
                    position(&backend.name.referenced),
                    format!(
                        "backend {:?} has `tlsVersions: []`: nginx would accept no TLS version",
                        backend.name.value
                    ),
                );
            }
        }
    }

    fn templates(&mut self, scenario: &Scenario, pki: &[String]) {
        let install = scenario.features.contains(&Feature::EnvoyClientCertificate);
        let gateway = scenario.features.contains(&Feature::GatewayApiBackendTls);
        let namespaces = scenario.namespaces.iter().map(|n| n.value.as_str());
        let known = known_names(pki.iter().map(String::as_str), namespaces, install, gateway);
        match template::references(self.source) {
            Err(open) => self.error((open.line, open.column), "`${` without a closing `}`".into()),
            Ok(references) => {
                let key_regions = key_regions(self.source, scenario);
                for reference in references {
                    if known.contains(&reference.name) {
                        let is_key = reference.name.ends_with(".key") || reference.name.ends_with(".keyBase64");
                        if is_key && !key_regions.iter().any(|r| r.contains(&reference.line)) {
                            self.error(
                                (reference.line, reference.column),
                                format!(
                                    "${{{}}} is a private key: keys go only into objects (`apply`, `applyRejected`, \
                                     `envoyClientCertificate`), never into what is sent, expected or reported",
                                    reference.name
                                ),
                            );
                        }
                        continue;
                    }
                    // References a feature offers: say which, rather than guess a name.
                    let needs =
                        [("gateway.", Feature::GatewayApiBackendTls), ("install.", Feature::EnvoyClientCertificate)]
                            .into_iter()
                            .find(|(prefix, feature)| {
                                reference.name.starts_with(prefix) && !scenario.features.contains(feature)
                            });
                    let hint = match needs {
                        Some((prefix, feature)) => {
                            format!("; ${{{prefix}*}} needs the scenario to claim feature {}", feature.name())
                        }
                        None if reference.name.len() > MAX_REFERENCE_SHOWN => String::new(),
                        None => suggestion(&reference.name, &known)
                            .map(|s| format!("; did you mean ${{{s}}}?"))
                            .unwrap_or_default(),
                    };
                    let shown = crate::cluster::truncate(&reference.name, MAX_REFERENCE_SHOWN);
                    self.error((reference.line, reference.column), format!("unknown reference ${{{shown}}}{hint}"));
                }
            }
        }
    }

    fn namespaces(&mut self, scenario: &Scenario) {
        let mut seen = BTreeSet::new();
        for namespace in &scenario.namespaces {
            if !is_dns_label(&namespace.value) || namespace.value.len() > 12 {
                self.error(
                    position(&namespace.referenced),
                    format!("namespace name {:?} must be a DNS label of at most 12 characters", namespace.value),
                );
            }
            if !seen.insert(namespace.value.as_str()) {
                self.error(position(&namespace.referenced), format!("namespace {:?} is listed twice", namespace.value));
            }
        }
    }

    /// Install-wide changes and material need the feature that says the installation has them.
    fn install_wide(&mut self, scenario: &Scenario) {
        for (a, b) in Feature::CONTRADICTIONS {
            if scenario.features.contains(&a) && scenario.features.contains(&b) {
                self.error(
                    position(&scenario.name.referenced),
                    format!("features {} and {} exclude each other: no installation has both", a.name(), b.name()),
                );
            }
        }
        if scenario.features.contains(&Feature::EnvoyClientCertificate) {
            return;
        }
        let uses_install_ca = scenario
            .backends
            .iter()
            .filter_map(|b| b.client_certificate.as_ref())
            .find(|c| c.ca.value == INSTALL_CLIENT_CA);
        let changes = scenario.steps.iter().any(|s| matches!(s, Step::EnvoyClientCertificate(_)));
        if let Some(client) = uses_install_ca {
            self.error(
                position(&client.ca.referenced),
                format!("{INSTALL_CLIENT_CA} needs the feature envoy-client-certificate"),
            );
        } else if changes {
            self.error(
                position(&scenario.name.referenced),
                "envoyClientCertificate steps need the feature envoy-client-certificate".into(),
            );
        }
    }

    /// A step that names an object outside `apply` (`delete`, `expectStatus`) reaches only the
    /// scenario's own namespaces, and no Namespace.
    fn own_namespace_reference(
        &mut self,
        scenario: &Scenario,
        kind: Option<&str>,
        namespace: Option<&Spanned<String>>,
        step: &str,
    ) {
        if let Some(kind) = kind.filter(|k| *k != "Namespace" && CLUSTER_SCOPED_KINDS.contains(k)) {
            let at = namespace.map_or(position(&scenario.name.referenced), |n| position(&n.referenced));
            self.error(
                at,
                format!("`{step}` of a {kind}, which belongs to no namespace: a scenario reaches only its own"),
            );
        }
        if kind == Some("Namespace") {
            let at = namespace.map_or((0, 0), |n| position(&n.referenced));
            let at = if at == (0, 0) { position(&scenario.name.referenced) } else { at };
            self.error(
                at,
                format!(
                    "`{step}` of a Namespace: the harness makes and deletes a scenario's namespaces, and reads none"
                ),
            );
        }
        let Some(namespace) = namespace else { return };
        if !is_own_namespace(&namespace.value, &scenario.namespaces) {
            self.error(
                position(&namespace.referenced),
                format!(
                    "`{step}` in namespace {:?}: a scenario reaches only its own namespaces, ${{namespace}} (the \
                     default) or ${{namespaces.NAME}} for a NAME listed under `namespaces:`",
                    crate::cluster::truncate(&namespace.value, 80)
                ),
            );
        }
    }

    /// An `apply` block must be YAML documents that are Kubernetes objects.
    fn manifest(&mut self, scenario: &Scenario, manifest: &Spanned<String>) {
        let (line0, indent) = block_origin(self.source, manifest);
        let documents: Vec<serde_json::Value> = match serde_saphyr::from_str_multiple(&manifest.value) {
            Ok(docs) => docs,
            Err(e) => {
                let err = yaml_error(self.path, &manifest.value, &e, (line0, indent));
                self.errors.push(err);
                return;
            }
        };
        if documents.iter().all(serde_json::Value::is_null) {
            self.error(position(&manifest.referenced), "`apply` holds no objects".into());
        }
        for (index, doc) in documents.iter().enumerate().filter(|(_, d)| !d.is_null()) {
            let missing: Vec<&str> =
                [("/apiVersion", "apiVersion"), ("/kind", "kind"), ("/metadata/name", "metadata.name")]
                    .into_iter()
                    .filter(|(pointer, _)| {
                        doc.pointer(pointer).and_then(serde_json::Value::as_str).is_none_or(str::is_empty)
                    })
                    .map(|(_, field)| field)
                    .collect();
            if !missing.is_empty() {
                self.error(
                    position(&manifest.referenced),
                    format!("document {} of `apply` lacks {}", index + 1, missing.join(", ")),
                );
            }
            if let Some(problem) = outside_own_namespaces(doc, &scenario.namespaces) {
                self.error(position(&manifest.referenced), format!("document {} of `apply`: {problem}", index + 1));
            }
        }
    }
}

/// Why an object of an `apply` block would land outside the scenario's own namespaces, which
/// the harness makes and deletes: a Namespace, or a namespace named otherwise than as
/// `${namespace}` or `${namespaces.NAME}` (on a real cluster, nothing would ever remove it).
fn outside_own_namespaces(doc: &serde_json::Value, declared: &[Spanned<String>]) -> Option<String> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    if kind != "Namespace" && CLUSTER_SCOPED_KINDS.contains(&kind) {
        return Some(format!("{kind} {name:?} belongs to no namespace: a scenario makes objects only in its own"));
    }
    if kind == "Namespace" {
        return Some(format!(
            "Namespace {name:?}: a scenario lists the namespaces it needs under `namespaces:`, and the harness makes them"
        ));
    }
    let namespace = doc["metadata"]["namespace"].as_str()?;
    (!is_own_namespace(namespace, declared)).then(|| {
        format!(
            "{kind} {name:?} goes into namespace {:?}: objects go only into the scenario's own namespaces, \
             ${{namespace}} (the default) or ${{namespaces.NAME}} for a NAME listed under `namespaces:`",
            crate::cluster::truncate(namespace, 80)
        )
    })
}

/// Kinds of no namespace that `check` knows by name (the runner refuses any other it meets,
/// asking the cluster).
const CLUSTER_SCOPED_KINDS: &[&str] = &[
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "GatewayClass",
    "Node",
    "PersistentVolume",
    "StorageClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
    "PriorityClass",
    "IngressClass",
];

/// Whether `namespace`, as written, names one of the scenario's own namespaces.
fn is_own_namespace(namespace: &str, declared: &[Spanned<String>]) -> bool {
    namespace == "${namespace}"
        || namespace
            .strip_prefix("${namespaces.")
            .and_then(|rest| rest.strip_suffix('}'))
            .is_some_and(|n| declared.iter().any(|d| d.value == n))
}

/// The lines (1-based) that may hold private keys: the manifests of `apply` and
/// `applyRejected` steps, as parsed, and the `envoyClientCertificate` steps of the scenario's
/// `steps` list, each up to the next step.
fn key_regions(source: &str, scenario: &Scenario) -> Vec<std::ops::RangeInclusive<usize>> {
    let mut regions = Vec::new();
    for step in &scenario.steps {
        let manifest = match step {
            Step::Apply(manifest) => manifest,
            Step::ApplyRejected(rejected) => &rejected.manifest,
            _ => continue,
        };
        let (line0, _) = block_origin(source, manifest);
        let first = (manifest.referenced.line() as usize).min(line0 + 1);
        regions.push(first..=line0 + manifest.value.lines().count().max(1));
    }
    let lines: Vec<&str> = source.lines().collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let content = |line: &str| !line.trim().is_empty() && !line.trim_start().starts_with('#');
    let Some(steps) = lines.iter().position(|l| l.trim_end() == "steps:") else { return regions };
    let Some(step_indent) = lines[steps + 1..].iter().find(|l| content(l)).map(|l| indent(l)) else { return regions };
    for (index, line) in lines.iter().enumerate().skip(steps + 1) {
        if indent(line) != step_indent || !line.trim_start().starts_with("- envoyClientCertificate:") {
            continue;
        }
        let end = lines[index + 1..]
            .iter()
            .position(|next| content(next) && indent(next) <= step_indent)
            .map_or(lines.len(), |offset| index + offset + 1);
        regions.push(index + 1..=end);
    }
    regions
}

/// The longest request path or header value a scenario may send: proxies refuse request
/// lines and headers much beyond this (nginx and Envoy default to 8 KiB and 60 KiB).
const MAX_REQUEST_LINE_PART: usize = 8192;

/// What is wrong with the shape of a request's host (references such as `${host}` stand for
/// names of their own): a port at most once after a name, labels not empty and at most 63
/// characters, at most 253 characters when no reference lengthens it.
fn host_name_problem(host: &str) -> Option<&'static str> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains('}') => (name, Some(port)),
        _ => (host, None),
    };
    if name.is_empty() || port.is_some_and(str::is_empty) {
        return Some(if name.is_empty() { "has no host name before its port" } else { "has an empty port" });
    }
    if without_references(name).contains(':') {
        return Some("has more than one port");
    }
    let literal_labels = name.split('.').filter(|label| !label.contains("${")).collect::<Vec<_>>();
    if literal_labels.iter().any(|label| label.is_empty() && !name.contains("${")) || name.contains("..") {
        return Some("has an empty label (two dots in a row, or a dot at an end)");
    }
    if literal_labels.iter().any(|label| label.len() > 63) {
        return Some("has a label longer than 63 characters");
    }
    if !name.contains("${") && name.len() > 253 {
        return Some("is longer than 253 characters");
    }
    None
}

/// A PKI entry's name, which references name as `${pki.NAME.*}`.
fn is_pki_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    name.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// What keeps `uri` from being a URI subjectAltName (RFC 5280: an absolute URI, in ASCII).
fn uri_problem(uri: &str) -> Option<&'static str> {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Some("has no scheme (such as spiffe:// or https://)");
    };
    let scheme_ok = scheme.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        Some("has no scheme (such as spiffe:// or https://)")
    } else if rest.is_empty() {
        Some("has nothing after its scheme")
    } else if !uri.bytes().all(|b| b.is_ascii_graphic()) {
        Some("holds a space, a control character or a character outside ASCII; percent-encode it")
    } else if uri.len() > 2048 {
        Some("is longer than 2048 characters")
    } else {
        None
    }
}

/// The most PKI entries a scenario may have: the largest in the catalog has 7.
const MAX_PKI_ENTRIES: usize = 50;

/// The most characters of an unknown reference a message repeats.
const MAX_REFERENCE_SHOWN: usize = 80;

/// How a backend names the installation's client certificate CA.
pub const INSTALL_CLIENT_CA: &str = "install.envoy-client-ca";

/// Where a block scalar's content starts: (line of its first line minus one, indentation).
fn block_origin(source: &str, block: &Spanned<String>) -> (usize, usize) {
    let start = block.referenced.line() as usize;
    let lines: Vec<&str> = source.lines().collect();
    let leading_blank = block.value.lines().take_while(|l| l.trim().is_empty()).count();
    let Some(first) = block.value.lines().find(|l| !l.trim().is_empty()) else {
        return (start, 0);
    };
    for (index, line) in lines.iter().enumerate().skip(start.saturating_sub(1)) {
        if line.trim_start() == first.trim_start() && line.len() >= first.len() {
            let indent = line.len() - first.len();
            return (index - leading_blank, indent);
        }
    }
    (start, 0)
}

/// A serde-saphyr error as a [`LoadError`] at its position; `line0` and `indent` place a
/// block parsed on its own inside the file (`(0, 0)` for a whole file).
/// `source` is the text parsed.
pub(crate) fn yaml_error(
    path: &Path,
    source: &str,
    error: &serde_saphyr::Error,
    (line0, indent): (usize, usize),
) -> LoadError {
    let mut options = serde_saphyr::RenderOptions::default();
    options.snippets = serde_saphyr::SnippetMode::Off;
    let mut message = own_words(error).unwrap_or_else(|| reword(&error.without_snippet().render_with_options(options)));
    let in_file = |(line, column): (usize, usize)| (line0 + line, if line0 > 0 { indent + column } else { column });
    let mut at = error.location().map(|l| position(&l));
    // Which number was refused: the message alone does not say.
    if message.starts_with("expected a whole number")
        && let Some((line, column)) = at
        && let Some(text) = source.lines().nth(line.saturating_sub(1)).and_then(|l| l.get(column.saturating_sub(1)..))
    {
        let scalar = text.split([',', ']', '}', '#']).next().unwrap_or_default().trim();
        if !scalar.is_empty() {
            message = format!("{}, not {}", strip_location_suffix(&message), crate::cluster::truncate(scalar, 40));
        }
    }
    // A list or mapping left open fails where the next key meets it, lines later: point at
    // what was left open.
    if is_syntax_error(error)
        && let Some((line, _)) = at
        && let Some((open_line, open_column, bracket)) = unclosed_flow(source, line)
    {
        let closing = if bracket == '[' { ']' } else { '}' };
        message = format!(
            "`{bracket}` is not closed by a `{closing}` before line {} (where YAML then says: {})",
            in_file((line, 1)).0,
            strip_location_suffix(&message)
        );
        at = Some((open_line, open_column));
    }
    let position = at.map(in_file);
    LoadError { path: path.to_owned(), position, message: strip_location_suffix(&message) }
}

/// The `[` or `{` (1-based line and column) of a flow list or mapping opened on a line before
/// `before_line` of `source` and still open at its start. Quoted text, comments and the
/// content of block scalars (`|`, `>`) are passed over.
fn unclosed_flow(source: &str, before_line: usize) -> Option<(usize, usize, char)> {
    let mut open: Vec<(usize, usize, char)> = Vec::new();
    let mut block_indent: Option<usize> = None;
    for (index, line) in source.lines().enumerate().take(before_line.saturating_sub(1)) {
        let indent = line.len() - line.trim_start_matches(' ').len();
        match block_indent {
            Some(parent) if line.trim().is_empty() || indent > parent => continue,
            _ => block_indent = None,
        }
        let mut quote: Option<char> = None;
        let mut previous = ' ';
        for (column, c) in line.chars().enumerate() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '#' if previous == ' ' => break,
                    '"' | '\'' if matches!(previous, ' ' | '[' | '{' | ',') => quote = Some(c),
                    '[' | '{' => open.push((index + 1, column + 1, c)),
                    ']' | '}' => {
                        open.pop();
                    }
                    _ => {}
                },
            }
            previous = c;
        }
        let trimmed = line.trim_end();
        if open.is_empty()
            && quote.is_none()
            && (trimmed.ends_with(['|', '>'])
                || trimmed.ends_with("|-")
                || trimmed.ends_with("|+")
                || trimmed.ends_with(">-"))
        {
            block_indent = Some(indent);
        }
    }
    open.first().copied()
}

/// Whether the text is not YAML at all (as opposed to YAML of the wrong shape).
fn is_syntax_error(error: &serde_saphyr::Error) -> bool {
    use serde_saphyr::Error;
    let mut inner = error;
    while let Error::WithSnippet { error, .. } = inner {
        inner = error;
    }
    // `Message` is also what a field's own check (serde's `Error::custom`) says: not syntax.
    matches!(inner, Error::ExternalMessage { .. } | Error::Eof { .. } | Error::ContainerEndMismatch { .. })
}

/// The errors whose library wording means nothing to a user, said in the project's words.
fn own_words(error: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::Error;
    use serde_saphyr::budget::BudgetBreach;
    let mut inner = error;
    while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = inner {
        inner = error;
    }
    match inner {
        Error::MultipleDocuments { .. } => {
            Some("a file holds one YAML document; this one has another after `---`".into())
        }
        Error::Budget { breach, .. } => Some(match breach {
            BudgetBreach::Depth { depth } => {
                format!("nested {depth} levels deep; YAML here may nest at most 64 levels")
            }
            BudgetBreach::Nodes { nodes } => {
                format!("more than {} YAML values once aliases are expanded, the most a file may hold", nodes - 1)
            }
            BudgetBreach::Aliases { .. } | BudgetBreach::Anchors { .. } => {
                "more YAML anchors or aliases than a file may hold".into()
            }
            _ => "larger than a file may be (a YAML size limit was reached)".into(),
        }),
        _ => None,
    }
}

/// The YAML library's phrases that name its internals, in words a scenario author knows.
fn reword(message: &str) -> String {
    const PHRASES: &[(&str, &str)] = &[
        ("expected mapping start", "expected a mapping (`key: value` lines)"),
        ("expected sequence start", "expected a list"),
        ("expected string scalar", "expected a string"),
        ("invalid boolean", "expected true or false"),
        ("invalid u64", "expected a whole number from 0 to 18446744073709551615"),
        ("invalid u16", "expected a whole number from 0 to 65535"),
        ("invalid u32", "expected a whole number from 0 to 4294967295"),
        (
            "expected end of mapping after enum variant value",
            "expected one key here (such as `request:`); another key follows it",
        ),
        ("unexpected value for unit enum variant", "expected a single word here, not a mapping or a list"),
        ("while scanning a plain scalar, found a tab", "a tab character: YAML is indented with spaces"),
        ("tabs disallowed", "a tab character: YAML is indented with spaces"),
        ("cannot deserialize null into string", "expected a string, not an empty value"),
        ("expected string key for externally tagged enum", "expected one key here, such as `request:`"),
        ("while scanning a quoted scalar", "a quoted string is not closed"),
    ];
    if let Some(key) = message.strip_prefix("duplicate mapping key: ") {
        let key = key.split(", set DuplicateKeyPolicy").next().unwrap_or(key);
        return format!("`{key}` is given twice in this mapping");
    }
    for (phrase, words) in PHRASES {
        if let Some(rest) = message.strip_prefix(phrase) {
            return format!("{words}{rest}");
        }
    }
    message.to_string()
}

/// serde-saphyr appends " at line L, column C" to plain messages; the position is shown
/// in front instead.
fn strip_location_suffix(message: &str) -> String {
    // An alias's message says where it was defined and used, in parentheses: kept whole.
    let message = match message.rfind(" at line ") {
        Some(at) if !message[..at].ends_with("(used") && !message[..at].ends_with("(defined") => &message[..at],
        _ => message,
    };
    cut_long_names(message)
}

/// `message` with every `name` in backquotes longer than 80 characters cut short: an unknown
/// field or variant is quoted, and may be any length.
fn cut_long_names(message: &str) -> String {
    let parts: Vec<&str> = message.split('`').collect();
    let cut: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(index, part)| {
            if index % 2 == 1 && index + 1 < parts.len() && part.chars().count() > 80 {
                crate::cluster::truncate(part, 80)
            } else {
                (*part).to_string()
            }
        })
        .collect();
    cut.join("`")
}

fn position(location: &Location) -> (usize, usize) {
    (location.line() as usize, location.column() as usize)
}

/// SHA-256 of `bytes`, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// One digest for a whole catalog: of every scenario's name and file digest, by name. Two
/// runs with the same catalog digest ran the same scenario files.
pub fn catalog_sha256<'a>(scenarios: impl IntoIterator<Item = &'a LoadedScenario>) -> String {
    let mut lines: Vec<String> = scenarios.into_iter().map(|s| format!("{} {}\n", s.name(), s.sha256)).collect();
    lines.sort();
    sha256_hex(lines.concat().as_bytes())
}

/// `text` with its `${...}` references taken out.
/// The most DNS names a PKI entry may list: a certificate with thousands is larger than
/// proxies and Kubernetes take.
const MAX_DNS_NAMES: usize = 100;

/// Why a reference in `text` can never be sent in `place` of a request: a private key is never
/// sent anywhere, and a PEM certificate is several lines (its base64 or DER forms are one).
fn unsendable_reference(text: &str, place: &str) -> Option<String> {
    let references = template::references(text).ok()?;
    references.iter().find_map(|reference| {
        let field = reference.name.rsplit('.').next().unwrap_or_default();
        let owner = reference.name.starts_with("pki.") || reference.name.starts_with("install.");
        // Keys are refused wherever they stand outside objects (see `key_regions`).
        match field {
            "cert" if owner => Some(format!(
                "${{{}}} is a PEM certificate of several lines, which cannot be {place}: use certBase64 or certDer",
                reference.name
            )),
            "certBase64" | "certDer" if owner && place == "a request's host" => {
                Some(format!("${{{}}} is base64 text, which cannot be {place}", reference.name))
            }
            _ => None,
        }
    })
}

fn without_references(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => rest = &rest[start + end + 1..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// A name a certificate can carry as a DNS SAN, odd ones included on purpose (wildcards,
/// partial-label wildcards, upper case, IP-looking names): non-empty labels of letters,
/// digits, '-', '_' and '*', at most 253 characters in all.
fn is_certificate_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*'))
        })
}

/// The clause ids of docs/contract.md: each clause is a list item opening with its id in bold
/// (`- **V3 Trust.**`).
pub fn contract_clauses() -> &'static [&'static str] {
    static CLAUSES: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
        include_str!("../../../docs/contract.md")
            .lines()
            .filter_map(|line| line.strip_prefix("- **"))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(|id| id.trim_end_matches(['.', '*']))
            .filter(|id| {
                id.len() >= 2
                    && id.starts_with(|c: char| c.is_ascii_uppercase())
                    && id[1..].bytes().all(|b| b.is_ascii_digit())
            })
            .collect()
    });
    &CLAUSES
}

/// A lowercase RFC 1123 label: what namespace names (and each part of a name) must be.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalog_is_the_source_s_catalog() {
        let on_disk = load_dir(&crate::suite::default_scenario_dir()).unwrap();
        let built_in = load_builtin().unwrap();
        let describe = |scenarios: &[LoadedScenario]| -> Vec<(String, String, PathBuf)> {
            scenarios.iter().map(|s| (s.name().to_string(), s.sha256.clone(), s.path.clone())).collect()
        };
        let paths = |scenarios: Vec<(String, String, PathBuf)>| -> Vec<(String, String, String)> {
            scenarios
                .into_iter()
                .map(|(n, h, p)| {
                    let p = p.to_string_lossy();
                    (n, h, p[p.find("scenarios/").unwrap_or(0)..].to_string())
                })
                .collect()
        };
        assert_eq!(paths(describe(&built_in)), paths(describe(&on_disk)));
        assert_eq!(catalog_sha256(&built_in), catalog_sha256(&on_disk));
    }

    const GOOD: &str = r#"name: demo
description: d
contract: [P1]
pki:
  - name: ca
    ca: true
  - name: leaf
    issuer: ca
    dnsNames: [a.test]
backends:
  - name: echo
    certificate: leaf
steps:
  - apply: |
      apiVersion: v1
      kind: Secret
      metadata:
        name: ca
      data:
        ca.crt: ${pki.ca.certBase64}
  - request:
      expect:
        status: 200
"#;

    fn errors(text: &str) -> Vec<String> {
        parse(Path::new("s.yaml"), text).unwrap_err().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn features_no_installation_has_together_are_refused() {
        let text = GOOD.replace(
            "contract: [P1]",
            "contract: [P1]\nfeatures: [envoy-client-certificate, no-envoy-client-certificate]",
        );
        assert_eq!(
            errors(&text),
            vec![
                "s.yaml:1:7: features envoy-client-certificate and no-envoy-client-certificate exclude each other: no installation has both"
            ]
        );
    }

    #[test]
    fn what_could_only_fail_at_run_time_is_refused_at_load_time() {
        let request = "  - request:\n      expect:\n        status: 200\n";
        let cases = [
            ("contract: [P1]", "contract: [P1, Q7]", "s.yaml:3:16: contract clause \"Q7\" is not in docs/contract.md"),
            ("dnsNames: [a.test]", "dnsNames: [\"a b.test\"]", "s.yaml:9:16: DNS name \"a b.test\" is not a DNS name"),
            ("dnsNames: [a.test]", "dnsNames: [\"a..test\"]", "s.yaml:9:16: DNS name \"a..test\" is not a DNS name"),
            (
                request,
                "  - request:\n      host: \"a.test\\r\\nx: y\"\n      expect:\n        status: 200\n",
                "s.yaml:22:13: request host \"a.test\\r\\nx: y\" is not a host name",
            ),
            (
                request,
                "  - request:\n      path: x\n      expect:\n        status: 200\n",
                "s.yaml:22:13: request path \"x\" must start with '/'",
            ),
            (
                request,
                "  - request:\n      path: \"/a b\"\n      expect:\n        status: 200\n",
                "s.yaml:22:13: request path \"/a b\" must be ASCII without spaces",
            ),
            (
                request,
                "  - request:\n      expect:\n        status: 200\n        backend:\n          name: other\n",
                "s.yaml:25:17: backend \"other\" is not declared under `backends`",
            ),
            (
                request,
                "  - expectStatus:\n      name: p\n      status: null\n",
                "s.yaml:23:15: `status` must be a mapping",
            ),
            (
                request,
                "  - expectStatus:\n      name: p\n      status: {}\n",
                "s.yaml:23:15: `status` must be a mapping",
            ),
        ];
        for (from, to, expected) in cases {
            let errs = errors(&GOOD.replace(from, to));
            assert!(errs.len() == 1 && errs[0].starts_with(expected), "{to}: {errs:?}");
        }
        let fine = GOOD.replace(request, "  - request:\n      host: other.${host}:80\n      path: /a?b=${host}\n      expect:\n        status: 200\n        backend:\n          name: echo\n");
        parse(Path::new("s.yaml"), &fine.replace("[a.test]", "[\"*.a.test\", ech*.b.test, A_B.test]")).unwrap();
    }

    #[test]
    fn the_contract_clauses_are_read_from_the_contract() {
        let clauses = contract_clauses();
        for id in ["P1", "P6", "V1", "V6", "S1", "S6", "C1", "C5", "N1", "N5", "I4"] {
            assert!(clauses.contains(&id), "{id} missing from {clauses:?}");
        }
    }

    #[test]
    fn fifos_devices_huge_files_and_symlink_loops_are_refused_without_hanging() {
        let dir = std::env::temp_dir().join(format!("utls-hostile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let fifo = std::ffi::CString::new(dir.join("fifo.yaml").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero.yaml")).unwrap();
        std::fs::write(dir.join("huge.yaml"), vec![b'#'; (MAX_FILE_BYTES + 1) as usize]).unwrap();
        std::fs::write(dir.join("latin1.yaml"), b"name: caf\xe9\n").unwrap();
        std::os::unix::fs::symlink("..", dir.join("sub/loop")).unwrap();

        let errors: Vec<String> = load_dir(&dir).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 1, "the loop is reported once, before any file is read: {errors:?}");
        assert!(
            errors[0].ends_with(
                "sub/loop: this directory was already read through another path (a symbolic link loop?); not read again"
            ),
            "{errors:?}"
        );

        std::fs::remove_file(dir.join("sub/loop")).unwrap();
        let mut errors: Vec<String> = load_dir(&dir).unwrap_err().iter().map(ToString::to_string).collect();
        errors.sort();
        let expected = [
            "fifo.yaml: not a regular file (a directory, FIFO or device); only regular files are read",
            "huge.yaml: 1048577 bytes is too large; files are limited to 1048576 bytes",
            "latin1.yaml: not UTF-8 text (invalid byte at offset 9)",
            "zero.yaml: not a regular file (a directory, FIFO or device); only regular files are read",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:?}");
        for (error, expected) in errors.iter().zip(expected) {
            assert!(error.ends_with(expected), "{error} does not end with {expected}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_good_scenario_loads() {
        let loaded = parse(Path::new("s.yaml"), GOOD).unwrap();
        assert_eq!(loaded.name(), "demo");
        assert_eq!(loaded.scenario.steps.len(), 2);
    }

    #[test]
    fn unknown_fields_are_errors_with_positions() {
        let text = GOOD.replace("    dnsNames: [a.test]", "    dnsName: [a.test]");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("s.yaml:9:"), "{errs:?}");
        assert!(errs[0].contains("dnsName"), "{errs:?}");
    }

    #[test]
    fn a_certificate_cannot_be_both_expired_and_not_yet_valid() {
        let text = GOOD
            .replace("    dnsNames: [a.test]\n", "    dnsNames: [a.test]\n    expired: true\n    notYetValid: true\n");
        assert_eq!(errors(&text), ["s.yaml:7:11: PKI entry \"leaf\" cannot be both `expired` and `notYetValid`"]);
    }

    #[test]
    fn ip_addresses_must_parse() {
        let text = GOOD.replace(
            "    dnsNames: [a.test]\n",
            "    dnsNames: [a.test]\n    ipAddresses: [10.0.0.1, \"::1\", 10.0.0.300]\n",
        );
        assert_eq!(errors(&text), ["s.yaml:10:36: IP address \"10.0.0.300\" is not an IPv4 or IPv6 address"]);
    }

    #[test]
    fn dangling_references_are_all_reported() {
        let text = GOOD.replace("issuer: ca", "issuer: root").replace("certificate: leaf", "certificate: leef");
        let errs = errors(&text);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0], "s.yaml:8:13: issuer \"root\" is not a PKI entry");
        assert_eq!(errs[1], "s.yaml:12:18: certificate \"leef\" is not a PKI entry");
    }

    #[test]
    fn unknown_template_names_point_at_the_reference() {
        let text = GOOD.replace("${pki.ca.certBase64}", "${pki.ca.certbase64}");
        let errs = errors(&text);
        assert_eq!(
            errs,
            vec!["s.yaml:20:17: unknown reference ${pki.ca.certbase64}; did you mean ${pki.ca.certBase64}?"]
        );
        let text = GOOD.replace("${pki.ca.certBase64}", "${gateway.name}");
        assert_eq!(
            errors(&text),
            vec![
                "s.yaml:20:17: unknown reference ${gateway.name}; ${gateway.*} needs the scenario to claim feature \
                 gateway-api-backend-tls"
            ]
        );
    }

    #[test]
    fn manifest_yaml_errors_point_into_the_block() {
        let text = GOOD.replace("        name: ca\n", "        name: [ca\n");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        // The flow sequence never closes; the parser notices on the `data:` line.
        assert_eq!(
            errs[0],
            "s.yaml:18:15: `[` is not closed by a `]` before line 19 (where YAML then says: illegal placement of ':' \
             indicator)"
        );
        let text = GOOD.replace("      kind: Secret\n", "");
        assert_eq!(errors(&text), vec!["s.yaml:15:7: document 1 of `apply` lacks kind"]);
    }

    #[test]
    fn request_headers_are_checked_where_they_are_written() {
        let text = GOOD.replace(
            "  - request:\n",
            "  - request:\n      headers:\n        x-ok: fine\n        bad name: v\n        Host: h\n",
        );
        assert_eq!(
            errors(&text),
            vec![
                "s.yaml:24:19: request header name \"bad name\" is not an HTTP token",
                "s.yaml:25:15: set the Host header with the request's `host`, not in `headers`",
            ]
        );
    }

    #[test]
    fn what_can_never_be_sent_is_refused_where_it_is_written() {
        let text = GOOD.replace(
            "  - request:\n",
            "  - request:\n      host: \"${host}:99999\"\n      path: /${pki.leaf.key}\n      headers:\n        \
             x-del: \"a\\x7Fb\"\n        x-nul: \"a\\0b\"\n        x-pem: ${pki.leaf.cert}\n        \
             x-fine: ${pki.leaf.serial}\n",
        );
        assert_eq!(
            errors(&text),
            vec![
                "s.yaml:22:13: request host \"${host}:99999\" has a port that is not a number from 1 to 65535",
                "s.yaml:23:14: ${pki.leaf.key} is a private key: keys go only into objects (`apply`, `applyRejected`, \
                 `envoyClientCertificate`), never into what is sent, expected or reported",
                "s.yaml:25:16: the value of request header \"x-del\" holds the control character U+007F, which HTTP does \
                 not allow",
                "s.yaml:26:16: the value of request header \"x-nul\" holds the control character U+0000, which HTTP does \
                 not allow",
                "s.yaml:27:16: ${pki.leaf.cert} is a PEM certificate of several lines, which cannot be a request header: \
                 use certBase64 or certDer",
            ]
        );
        let host = GOOD.replace("  - request:\n", "  - request:\n      host: ${pki.leaf.keyBase64}\n");
        assert_eq!(
            errors(&host),
            vec![
                "s.yaml:22:13: ${pki.leaf.keyBase64} is a private key: keys go only into objects (`apply`, \
                 `applyRejected`, `envoyClientCertificate`), never into what is sent, expected or reported"
            ]
        );
        let expected =
            GOOD.replace("        status: 200\n", "        status: 200\n        bodyContains: ${pki.leaf.key}\n");
        assert_eq!(errors(&expected).len(), 1, "a key in an expectation: {:?}", errors(&expected));
        for odd in ["${host}:80:80", ":8080", "a..b", "x.${host}:"] {
            let host = GOOD.replace("  - request:\n", &format!("  - request:\n      host: \"{odd}\"\n"));
            assert_eq!(errors(&host).len(), 1, "{odd}: {:?}", errors(&host));
        }
        let long = GOOD.replace("  - request:\n", &format!("  - request:\n      host: {}.test\n", "a".repeat(64)));
        assert!(errors(&long)[0].ends_with("has a label longer than 63 characters"), "{:?}", errors(&long));
        let headers = GOOD.replace(
            "  - request:\n",
            "  - request:\n      path: /a#b\n      headers:\n        x-a: 1\n        X-A: 2\n        content-length: \"3\"\n",
        );
        assert_eq!(errors(&headers).len(), 3, "fragment, duplicate, body header: {:?}", errors(&headers));
        let many: Vec<String> = (0..=MAX_DNS_NAMES).map(|n| format!("n{n}.test")).collect();
        let names = GOOD.replace("dnsNames: [a.test]", &format!("dnsNames: [{}]", many.join(", ")));
        let errors = errors(&names);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .ends_with("PKI entry \"leaf\" has 101 DNS names; at most 100 fit in a certificate a proxy will take")
        );
    }

    #[test]
    fn a_request_cannot_both_miss_and_reach_the_backend() {
        let text = GOOD.replace(
            "        status: 200\n",
            "        status: 200\n        backendReached: false\n        backend: {tls: true}\n",
        );
        assert_eq!(
            errors(&text),
            vec!["s.yaml:24:25: `backendReached: false` contradicts the `backend` expectation beside it"]
        );
        let agreeing = GOOD.replace(
            "        status: 200\n",
            "        status: 200\n        backendReached: true\n        backend: {tls: true}\n",
        );
        assert!(parse(Path::new("s.yaml"), &agreeing).is_ok());
    }

    #[test]
    fn backend_namespaces_must_be_declared() {
        let text = GOOD.replace("    certificate: leaf\n", "    certificate: leaf\n    namespace: team\n");
        assert_eq!(
            errors(&text),
            vec!["s.yaml:13:16: backend namespace \"team\" is not one of the scenario's `namespaces`"]
        );
        let declared = text.replace("pki:\n", "namespaces: [team]\npki:\n");
        assert!(parse(Path::new("s.yaml"), &declared).is_ok());
    }

    #[test]
    fn issuers_must_be_earlier_cas() {
        let text = GOOD.replace("    ca: true\n", "");
        assert_eq!(errors(&text), vec!["s.yaml:7:13: issuer \"ca\" is not a CA (set `ca: true` on it)"]);
        let text = GOOD.replace("issuer: ca", "issuer: leaf");
        assert_eq!(errors(&text), vec!["s.yaml:8:13: issuer \"leaf\" must be defined before \"leaf\""]);
    }
}
