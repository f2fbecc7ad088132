//! A pod's nginx configuration, made safe to run on the host: [`confine`].
//!
//! On a real cluster a container has its own network namespace, its own filesystem and is
//! stopped with its pod. On loopback nginx shares the host, so the configuration a scenario
//! supplies is parsed (nginx's own grammar: directives, blocks, quoted strings, comments) and
//! rewritten before it runs:
//!
//! - every `listen` binds the pod's address, whatever address it named, and a `server` block
//!   with no `listen` gets the one nginx would give it, bound the same way;
//! - `daemon` and `user` are dropped (loopback keeps nginx in the foreground, in the pod's
//!   process group) and `pid` is set to a file in the pod's directory;
//! - files nginx writes (logs, temporary and cache directories) must stay in the pod's
//!   directory: relative paths without `..`, paths under a volume mount, or the standard
//!   streams; an `http` block that names no access log gets `/dev/stdout`, where the official
//!   nginx image's default log goes (nginx's own default is a file of the host);
//! - files nginx serves (`root`, `alias`, which `autoindex` lists and WebDAV writes under) are
//!   confined the same way, without variables; responses stored at a path of their own
//!   (`proxy_store PATH` and its fastcgi, uwsgi and scgi twins) are refused, `on` stores
//!   under the confined root;
//! - what cannot be checked or confined is refused: `include`, `load_module`, `unix:` sockets.
//!
//! A refusal names the file, the line and the directive, and the pod does not start.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};

/// One word of a directive as written (quotes and escapes kept) and as nginx reads it.
#[derive(Debug, Clone, PartialEq)]
struct Word {
    raw: String,
    value: String,
}

impl Word {
    fn bare(value: impl Into<String>) -> Word {
        let value = value.into();
        Word { raw: value.clone(), value }
    }
}

/// A directive with its arguments and, for a block directive, its children.
#[derive(Debug, Clone, PartialEq)]
struct Directive {
    /// As nginx reads it; what the rules look at.
    name: String,
    /// As written (quotes kept): what is rendered.
    raw_name: String,
    args: Vec<Word>,
    block: Option<Vec<Directive>>,
    line: usize,
}

/// What loopback gives a pod's nginx: its address, its directory, where its volumes are.
pub struct Confinement<'a> {
    pub address: Ipv4Addr,
    pub pod_dir: &'a Path,
    /// `(mountPath, local directory)`, longest mount path first.
    pub mounts: &'a [(String, PathBuf)],
}

/// The rewritten text of `text` (read from `source`, named in errors), or why it cannot run.
///
/// # Errors
/// The text does not parse, or uses something loopback cannot confine to the pod.
pub fn confine(source: &str, text: &str, pod: &Confinement<'_>) -> Result<String, String> {
    let mut directives = parse(text).map_err(|(line, e)| format!("{source}:{line}: {e}"))?;
    confine_block(&mut directives, Context::Main, pod).map_err(|(line, e)| format!("{source}:{line}: {e}"))?;
    directives.insert(0, directive("pid", &[&pod.pod_dir.join("nginx.pid").display().to_string()], 0));
    let mut out = String::new();
    render(&directives, 0, &mut out);
    Ok(out)
}

/// The directives of a `-g` command-line argument, confined as the main context is.
///
/// # Errors
/// As [`confine`].
pub fn confine_global(text: &str, pod: &Confinement<'_>) -> Result<String, String> {
    let mut directives = parse(text).map_err(|(_, e)| format!("-g {text:?}: {e}"))?;
    confine_block(&mut directives, Context::Main, pod).map_err(|(_, e)| format!("-g {text:?}: {e}"))?;
    if let Some(block) = directives.iter().find(|d| d.block.is_some()) {
        return Err(format!("-g {text:?}: {:?} is a block; -g takes simple directives", block.name));
    }
    let mut out = String::new();
    render(&directives, 0, &mut out);
    Ok(out.lines().map(str::trim).collect::<Vec<_>>().join(" "))
}

#[derive(Clone, Copy, PartialEq)]
enum Context {
    Main,
    Http,
    Stream,
    Other,
}

/// Directives whose first argument is a path nginx writes to.
const WRITES_FIRST_ARGUMENT: &[&str] = &[
    "access_log",
    "error_log",
    "lock_file",
    "client_body_temp_path",
    "proxy_temp_path",
    "fastcgi_temp_path",
    "uwsgi_temp_path",
    "scgi_temp_path",
    "proxy_cache_path",
    "fastcgi_cache_path",
    "uwsgi_cache_path",
    "scgi_cache_path",
];

/// Directives whose first argument is a directory nginx serves files from (and, with WebDAV,
/// writes to).
const SERVES_FIRST_ARGUMENT: &[&str] = &["root", "alias"];

/// Directives that store responses: `on` stores under the root, any other value is a path
/// template of its own, which loopback does not follow.
const STORES_RESPONSES: &[&str] = &["proxy_store", "fastcgi_store", "uwsgi_store", "scgi_store"];

/// Log targets that are not files.
const STANDARD_TARGETS: &[&str] = &["off", "stderr", "/dev/stdout", "/dev/stderr", "/dev/null"];

type Located<T> = Result<T, (usize, String)>;

fn confine_block(directives: &mut Vec<Directive>, context: Context, pod: &Confinement<'_>) -> Located<()> {
    let mut kept = Vec::with_capacity(directives.len());
    for mut d in directives.drain(..) {
        let fail = |message: String| Err((d.line, message));
        match d.name.as_str() {
            "daemon" | "user" | "pid" if context == Context::Main => continue,
            "include" => {
                return fail("\"include\" is not supported on loopback: put the configuration in one file".into());
            }
            "load_module" => return fail("\"load_module\" is not supported on loopback".into()),
            "listen" => d.args = confine_listen(&d.args, pod.address).map_err(|e| (d.line, e))?,
            name if WRITES_FIRST_ARGUMENT.contains(&name) => {
                if let Some(path) = d.args.first_mut() {
                    *path = confine_path(path, pod).map_err(|e| (d.line, format!("\"{name}\": {e}")))?;
                }
            }
            name if SERVES_FIRST_ARGUMENT.contains(&name) => {
                if let Some(path) = d.args.first_mut() {
                    if path.value.contains('$') {
                        return fail(format!(
                            "\"{name}\": {}: a path with variables cannot be kept in the pod on loopback",
                            path.value
                        ));
                    }
                    *path = confine_path(path, pod).map_err(|e| (d.line, format!("\"{name}\": {e}")))?;
                }
            }
            name if STORES_RESPONSES.contains(&name)
                && !matches!(d.args.first().map(|w| w.value.as_str()), Some("on" | "off")) =>
            {
                return fail(format!(
                    "\"{name}\" with a path is not supported on loopback: it writes where the path says; \
                     \"{name} on\" stores under the root"
                ));
            }
            _ => {}
        }
        if let Some(block) = &mut d.block {
            let inner = match (context, d.name.as_str()) {
                (Context::Main, "http") => Context::Http,
                (Context::Main, "stream") => Context::Stream,
                _ => Context::Other,
            };
            confine_block(block, inner, pod)?;
            if inner == Context::Http && !block.iter().any(|child| child.name == "access_log") {
                block.insert(0, directive("access_log", &["/dev/stdout"], d.line));
            }
            let is_server = d.name == "server" && matches!(context, Context::Http | Context::Stream);
            if is_server && !block.iter().any(|child| child.name == "listen") {
                if context == Context::Stream {
                    return Err((d.line, "a stream \"server\" needs a \"listen\"".into()));
                }
                // What nginx listens on when a server names none.
                let port = if running_as_root() { "80" } else { "8000" };
                block.insert(0, directive("listen", &[&format!("{}:{port}", pod.address)], d.line));
            }
        }
        kept.push(d);
    }
    *directives = kept;
    Ok(())
}

fn running_as_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// `listen`'s arguments with the address replaced by the pod's (the port kept, 80 when
/// none was given) and IPv6-only options dropped.
fn confine_listen(args: &[Word], address: Ipv4Addr) -> Result<Vec<Word>, String> {
    let Some(first) = args.first() else { return Err("\"listen\" needs an address or a port".into()) };
    let spec = first.value.as_str();
    if spec.starts_with("unix:") {
        return Err(format!("listen {spec}: unix sockets are not supported on loopback; listen on a port"));
    }
    let port = if spec.bytes().all(|b| b.is_ascii_digit()) {
        spec
    } else if let Some(rest) = spec.strip_prefix('[') {
        match rest.split_once(']') {
            Some((_, "")) => "80",
            Some((_, port)) => port.strip_prefix(':').ok_or_else(|| format!("listen {spec}: malformed address"))?,
            None => return Err(format!("listen {spec}: malformed address")),
        }
    } else {
        spec.rsplit_once(':').map_or("80", |(_, port)| port)
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("listen {spec}: malformed port"));
    }
    let mut out = vec![Word::bare(format!("{address}:{port}"))];
    out.extend(args[1..].iter().filter(|w| !w.value.starts_with("ipv6only=")).cloned());
    Ok(out)
}

/// A path nginx writes to, kept inside the pod: relative without `..` (nginx resolves it in
/// the pod's prefix), translated when under a volume mount, or a standard stream.
fn confine_path(path: &Word, pod: &Confinement<'_>) -> Result<Word, String> {
    let value = path.value.as_str();
    if STANDARD_TARGETS.contains(&value) || value.starts_with("syslog:") || value.starts_with("memory:") {
        return Ok(path.clone());
    }
    if Path::new(value).components().any(|c| c == Component::ParentDir) {
        return Err(format!("{value}: \"..\" would leave the pod's directory"));
    }
    if !value.starts_with('/') {
        return Ok(path.clone());
    }
    let local = pod.mounts.iter().find_map(|(mount, dir)| {
        let rest = value.strip_prefix(mount.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then(|| dir.join(rest.trim_start_matches('/')))
    });
    match local {
        Some(local) => Ok(Word::bare(quote_if_needed(&local.display().to_string()))),
        None => Err(format!("{value} is outside the pod: use a path under a volume mount, or a relative one")),
    }
}

fn quote_if_needed(text: &str) -> String {
    if text.chars().any(|c| c.is_whitespace() || matches!(c, ';' | '{' | '}' | '"' | '\'' | '#' | '\\')) {
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        text.to_string()
    }
}

fn directive(name: &str, args: &[&str], line: usize) -> Directive {
    Directive {
        name: name.into(),
        raw_name: name.into(),
        args: args.iter().map(|a| Word::bare(quote_if_needed(a))).collect(),
        block: None,
        line,
    }
}

fn render(directives: &[Directive], depth: usize, out: &mut String) {
    for d in directives {
        let indent = "    ".repeat(depth);
        let _ = write!(out, "{indent}{}", d.raw_name);
        for arg in &d.args {
            let _ = write!(out, " {}", arg.raw);
        }
        match &d.block {
            None => out.push_str(";\n"),
            Some(block) => {
                out.push_str(" {\n");
                render(block, depth + 1, out);
                let _ = writeln!(out, "{indent}}}");
            }
        }
    }
}

/// The nesting nginx itself allows is far below this; a deeper file is refused, not recursed.
const MAX_DEPTH: usize = 64;

#[derive(Debug, PartialEq)]
enum Token {
    Word(Word),
    Semicolon,
    Open,
    Close,
}

fn parse(text: &str) -> Located<Vec<Directive>> {
    let tokens = tokenize(text)?;
    let mut tokens = tokens.into_iter().peekable();
    let block = parse_block(&mut tokens, 0)?;
    match tokens.next() {
        None => Ok(block),
        Some((line, _)) => Err((line, "unexpected \"}\"".into())),
    }
}

fn parse_block(
    tokens: &mut std::iter::Peekable<std::vec::IntoIter<(usize, Token)>>,
    depth: usize,
) -> Located<Vec<Directive>> {
    let mut out = Vec::new();
    while let Some((line, token)) = tokens.peek() {
        let line = *line;
        match token {
            Token::Close => return Ok(out),
            Token::Semicolon => return Err((line, "unexpected \";\"".into())),
            Token::Open => return Err((line, "unexpected \"{\"".into())),
            Token::Word(_) => {}
        }
        let Some((_, Token::Word(name))) = tokens.next() else { unreachable!("peeked a word") };
        let mut args = Vec::new();
        loop {
            match tokens.next() {
                Some((_, Token::Word(word))) => args.push(word),
                Some((_, Token::Semicolon)) => {
                    out.push(Directive { name: name.value, raw_name: name.raw, args, block: None, line });
                    break;
                }
                Some((open_line, Token::Open)) => {
                    if depth >= MAX_DEPTH {
                        return Err((open_line, "blocks nested too deeply".into()));
                    }
                    let block = parse_block(tokens, depth + 1)?;
                    match tokens.next() {
                        Some((_, Token::Close)) => {}
                        _ => return Err((open_line, format!("the \"{}\" block is not closed", name.value))),
                    }
                    out.push(Directive { name: name.value, raw_name: name.raw, args, block: Some(block), line });
                    break;
                }
                Some((close_line, Token::Close)) => {
                    return Err((close_line, format!("\"{}\" is not terminated by \";\"", name.value)));
                }
                None => return Err((line, format!("\"{}\" is not terminated by \";\"", name.value))),
            }
        }
    }
    // At the end of the text: a block's caller reports it unclosed.
    Ok(out)
}

/// nginx's lexical rules: whitespace separates words; `;`, `{` and `}` end them; `#` starts a
/// comment outside quotes; quoted words keep their quotes in `raw`; `${name}` stays in a word.
fn tokenize(text: &str) -> Located<Vec<(usize, Token)>> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => while chars.next_if(|&c| c != '\n').is_some() {},
            ';' | '{' | '}' => {
                chars.next();
                let token = match c {
                    ';' => Token::Semicolon,
                    '{' => Token::Open,
                    _ => Token::Close,
                };
                tokens.push((line, token));
            }
            '"' | '\'' => {
                let start = line;
                chars.next();
                let (mut raw, mut value) = (c.to_string(), String::new());
                loop {
                    match chars.next() {
                        None => return Err((start, "a quoted string is not closed".into())),
                        Some('\\') => {
                            let escaped = chars.next().ok_or((start, "a quoted string is not closed".to_string()))?;
                            raw.push('\\');
                            raw.push(escaped);
                            value.push(escaped);
                        }
                        Some(q) if q == c => {
                            raw.push(q);
                            break;
                        }
                        Some(other) => {
                            line += usize::from(other == '\n');
                            raw.push(other);
                            value.push(other);
                        }
                    }
                }
                tokens.push((start, Token::Word(Word { raw, value })));
            }
            _ => {
                let mut raw = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, ';' | '{' | '}') {
                        // `${name}` is a variable, not a block.
                        if c == '{' && raw.ends_with('$') {
                            while let Some(c) = chars.next_if(|&c| c != '}') {
                                raw.push(c);
                            }
                            if let Some(close) = chars.next() {
                                raw.push(close);
                            }
                            continue;
                        }
                        break;
                    }
                    chars.next();
                    if c == '\\' {
                        raw.push(c);
                        if let Some(next) = chars.next() {
                            raw.push(next);
                        }
                        continue;
                    }
                    raw.push(c);
                }
                tokens.push((line, Token::Word(Word::bare(raw))));
            }
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Confinement<'static> {
        static MOUNTS: std::sync::LazyLock<Vec<(String, PathBuf)>> =
            std::sync::LazyLock::new(|| vec![("/var/run/fixture".to_string(), PathBuf::from("/w/p/volumes/run"))]);
        Confinement { address: Ipv4Addr::new(127, 70, 0, 9), pod_dir: Path::new("/w/p"), mounts: &MOUNTS }
    }

    fn confined(text: &str) -> Result<String, String> {
        confine("nginx.conf", text, &pod())
    }

    #[test]
    fn every_listener_binds_the_pod_address() {
        let text = "http {\n  server { listen 8443 ssl; listen 0.0.0.0:80; listen [::]:8080 ipv6only=on; }\n  \
                    server { listen *:81 http2; listen localhost; }\n  server { server_name a; }\n}\n\
                    stream { server { listen 127.0.0.1:9000; } }\n";
        let out = confined(text).unwrap();
        for expected in [
            "listen 127.70.0.9:8443 ssl;",
            "listen 127.70.0.9:80;",
            "listen 127.70.0.9:8080;",
            "listen 127.70.0.9:81 http2;",
            "listen 127.70.0.9:9000;",
        ] {
            assert!(out.contains(expected), "{expected} missing from:\n{out}");
        }
        let defaults = out.matches("listen 127.70.0.9:80;").count() + out.matches("listen 127.70.0.9:8000;").count();
        assert_eq!(defaults, 3, "explicit :80, `localhost` and the server with no listen:\n{out}");
        assert!(!out.contains("0.0.0.0") && !out.contains("[::]") && !out.contains("127.0.0.1"), "{out}");
        let reparsed = parse(&out).unwrap();
        assert_eq!(reparsed.len(), 3, "pid, http, stream");
    }

    #[test]
    fn nginx_stays_in_the_foreground_with_its_pid_in_the_pod() {
        let out = confined("daemon on;\nuser root;\npid /run/nginx.pid;\nevents {}\n").unwrap();
        assert_eq!(out, "pid /w/p/nginx.pid;\nevents {\n}\n");
        assert_eq!(confine_global("daemon off; worker_processes 1;", &pod()).unwrap(), "worker_processes 1;");
        assert!(confine_global("http { }", &pod()).is_err());
    }

    #[test]
    fn written_files_stay_in_the_pod() {
        let out = confined(
            "error_log logs/error.log;\nhttp { access_log /dev/stdout echo; client_body_temp_path \
             /var/run/fixture/body 1 2; }\n",
        )
        .unwrap();
        assert!(out.contains("error_log logs/error.log;"), "{out}");
        assert!(out.contains("client_body_temp_path /w/p/volumes/run/body 1 2;"), "{out}");
        for (text, problem) in [
            ("http { access_log /etc/cron.d/x; }", "nginx.conf:1: \"access_log\": /etc/cron.d/x is outside the pod"),
            ("error_log ../../x;", "nginx.conf:1: \"error_log\": ../../x: \"..\" would leave"),
            ("\n\ninclude /etc/nginx/conf.d/*.conf;", "nginx.conf:3: \"include\" is not supported"),
            ("load_module x.so;", "nginx.conf:1: \"load_module\""),
            ("http { server { listen unix:/tmp/s; } }", "nginx.conf:1: listen unix:/tmp/s: unix sockets"),
            ("stream { server { proxy_pass a; } }", "nginx.conf:1: a stream \"server\" needs"),
        ] {
            let error = confined(text).unwrap_err();
            assert!(error.starts_with(problem), "{text}: {error}");
        }
    }

    #[test]
    fn served_and_stored_files_stay_in_the_pod_and_the_default_log_is_stdout() {
        let out = confined(
            "http { server { root /var/run/fixture/www; location /a/ { alias html/a/; dav_methods PUT; } \
             location /b { proxy_store on; } } }\n",
        )
        .unwrap();
        assert!(out.contains("root /w/p/volumes/run/www;"), "{out}");
        assert!(out.contains("alias html/a/;"), "{out}");
        assert!(out.contains("access_log /dev/stdout;"), "an http block with no log logs to stdout:\n{out}");
        let logged = confined("http { access_log off; server { listen 80; } }\n").unwrap();
        assert_eq!(logged.matches("access_log").count(), 1, "a log of its own is kept:\n{logged}");
        for (text, problem) in [
            (
                "http { server { location / { alias /; autoindex on; } } }",
                "nginx.conf:1: \"alias\": / is outside the pod",
            ),
            ("http { server { root /home/user; dav_methods PUT; } }", "nginx.conf:1: \"root\": /home/user is outside"),
            (
                "http { server { root /var/run/fixture/$host; } }",
                "nginx.conf:1: \"root\": /var/run/fixture/$host: a path",
            ),
            ("http { server { root ../..; } }", "nginx.conf:1: \"root\": ../..: \"..\" would leave"),
            ("http { server { location / { proxy_store /tmp$uri; } } }", "nginx.conf:1: \"proxy_store\" with a path"),
            ("http { server { location / { fastcgi_store /x; } } }", "nginx.conf:1: \"fastcgi_store\" with a path"),
        ] {
            let error = confined(text).unwrap_err();
            assert!(error.starts_with(problem), "{text}: {error}");
        }
    }

    #[test]
    fn the_grammar_is_nginx_s() {
        let text = "http {\n  log_format echo escape=json '{\"a\":\"$b;\"}'; # a comment; {\n  \
                    map $x ${y}z { default \"q\\\"s\"; }\n}\n";
        let parsed = parse(text).unwrap();
        let http = parsed[0].block.as_ref().unwrap();
        assert_eq!(http[0].args[2].value, "{\"a\":\"$b;\"}");
        assert_eq!(http[1].args[1].value, "${y}z");
        assert_eq!(http[1].block.as_ref().unwrap()[0].args[0].value, "q\"s");
        let mut out = String::new();
        render(&parsed, 0, &mut out);
        fn words(directives: &[Directive]) -> Vec<String> {
            let mut out = Vec::new();
            for d in directives {
                out.push(d.name.clone());
                out.extend(d.args.iter().map(|a| a.value.clone()));
                out.extend(d.block.as_deref().map(words).unwrap_or_default());
            }
            out
        }
        assert_eq!(words(&parse(&out).unwrap()), words(&parsed), "rendering keeps every word:\n{out}");
        for (bad, line) in [("http {", 1), ("a b", 1), ("a;\n}", 2), ("a 'b;", 1), ("\n;", 2), ("a { b }", 1)] {
            assert_eq!(parse(bad).map_err(|(l, _)| l), Err(line), "{bad:?}");
        }
        // Found by fuzzing: a quoted directive name lost its quotes when rendered.
        let quoted = "\"x;\ny {\" z;\n";
        let pod = pod();
        let once = confine("nginx.conf", quoted, &pod).unwrap();
        assert_eq!(confine("nginx.conf", &once, &pod).unwrap(), once);
        let deep = "a {".repeat(100) + &"}".repeat(100);
        assert!(parse(&deep).is_err());
    }
}
