//! The book (book/src, built with `mdbook build book`) and the README hold together: every
//! chapter SUMMARY.md lists exists, and every relative link of a chapter or of the README
//! reaches a file that is there, a Markdown page the book renders (a chapter), and a heading
//! of that page when it names one. The guides' generated parts (fault and disruption tables,
//! the nightly's dry run) are checked where they are by the tests of what generates them.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `path` with `.` and `..` resolved lexically, as a browser resolves a relative URL.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            // Above the start, a `..` stays: the link leaves the tree it was resolved in.
            Component::ParentDir => {
                if !matches!(out.components().next_back(), Some(Component::Normal(_))) || !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The chapters SUMMARY.md lists, relative to book/src.
fn chapters() -> Vec<PathBuf> {
    let summary = std::fs::read_to_string(root().join("book/src/SUMMARY.md")).unwrap();
    links(&summary).into_iter().map(PathBuf::from).collect()
}

/// The lines of `text` outside fenced code blocks (and not their fences).
fn prose_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// The targets of the Markdown links and images of `text`, outside code blocks and spans.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in prose_lines(text) {
        // Code spans are dropped first: `[x](y)` in one is not a link.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].trim().to_string());
            rest = &after[end..];
        }
    }
    found
}

/// The anchors mdBook gives the headings of `text`: lowercase, spaces as `-`, other
/// punctuation dropped, a repeated heading numbered.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for line in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else { continue };
        let title = heading.trim_start_matches('#').trim().replace('`', "");
        let slug: String = title
            .chars()
            .filter_map(|c| match c {
                c if c.is_alphanumeric() || c == '_' || c == '-' => Some(c.to_ascii_lowercase()),
                c if c.is_whitespace() => Some('-'),
                _ => None,
            })
            .collect();
        let mut name = slug.clone();
        let mut n = 1;
        while seen.contains(&name) {
            name = format!("{slug}-{n}");
            n += 1;
        }
        seen.insert(name);
    }
    seen
}

/// What is wrong with the link `target` of the page at `page` (relative to `base`), if
/// anything: `rendered` says which Markdown pages exist where the page is read.
fn check(base: &Path, page: &Path, target: &str, rendered: &dyn Fn(&Path) -> bool) -> Option<String> {
    if target.starts_with("http://") || target.starts_with("https://") || target.starts_with("mailto:") {
        return None;
    }
    let (file, anchor) = target.split_once('#').map_or((target, None), |(f, a)| (f, Some(a)));
    let resolved = if file.is_empty() { page.to_path_buf() } else { normalize(&page.parent()?.join(file)) };
    if resolved.starts_with("..") {
        return Some(format!("{target} leaves the book"));
    }
    let on_disk = base.join(&resolved);
    if !on_disk.exists() {
        return Some(format!("{target}: {} does not exist", on_disk.display()));
    }
    if resolved.extension().is_some_and(|e| e == "md") {
        if !rendered(&resolved) {
            return Some(format!("{target} is not a chapter of book/src/SUMMARY.md, so the book has no such page"));
        }
        if let Some(anchor) = anchor {
            let text = std::fs::read_to_string(&on_disk).unwrap();
            if !anchors(&text).contains(anchor) {
                return Some(format!("{target}: no heading #{anchor} in {}", resolved.display()));
            }
        }
    }
    None
}

#[test]
fn every_link_of_the_book_and_the_readme_reaches_a_page() {
    let src = root().join("book/src");
    let chapters = chapters();
    assert!(chapters.len() > 10, "{chapters:?}");
    let listed: BTreeSet<PathBuf> = chapters.iter().cloned().collect();
    let mut problems = Vec::new();
    for chapter in &chapters {
        let Ok(text) = std::fs::read_to_string(src.join(chapter)) else {
            problems.push(format!("SUMMARY.md lists {}, which does not exist", chapter.display()));
            continue;
        };
        for target in links(&text) {
            if let Some(problem) = check(&src, chapter, &target, &|page| listed.contains(page)) {
                problems.push(format!("book/src/{}: {problem}", chapter.display()));
            }
        }
    }
    // The README is read on the forge, where every file of the repository is a page.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for target in links(&readme) {
        if let Some(problem) = check(&root(), Path::new("README.md"), &target, &|_| true) {
            problems.push(format!("README.md: {problem}"));
        }
    }
    assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
}

#[test]
fn the_link_check_finds_what_it_must() {
    let src = root().join("book/src");
    let listed = |page: &Path| page == Path::new("running.md");
    let page = Path::new("running.md");
    assert_eq!(check(&src, page, "running.md#exit-codes", &listed), None);
    assert!(check(&src, page, "running.md#no-such-heading", &listed).unwrap().contains("no heading"));
    assert!(check(&src, page, "missing.md", &listed).unwrap().contains("does not exist"));
    assert!(check(&src, page, "layout.md", &listed).unwrap().contains("not a chapter"));
    assert!(check(&src, page, "../../Cargo.toml", &listed).unwrap().contains("leaves the book"));
    assert_eq!(check(&src, page, "https://example.test/x", &listed), None);
    assert_eq!(
        anchors("# A `code` title\n## Same\n## Same\n```\n# not a heading\n```\n"),
        ["a-code-title", "same", "same-1"].map(String::from).into()
    );
    assert_eq!(links("see [a](x.md) and `[b](y.md)`\n```\n[c](z.md)\n```\n"), ["x.md"]);
}
