//! Embeds the scenario catalog (`scenarios/**/*.yaml`) in the binary, so that an installed
//! `upstream-tls-conformance` runs the catalog it was built with from any directory
//! (`harness::scenario::load::load_builtin`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    let mut code = String::from("/// The built-in catalog: (path under scenarios/, text), sorted by path.\n");
    code.push_str("pub static BUILTIN: &[(&str, &str)] = &[\n");
    for file in &files {
        let relative = file.strip_prefix(&root).expect("below the catalog").to_string_lossy().replace('\\', "/");
        let absolute = file.canonicalize().expect("a catalog file");
        writeln!(code, "    ({relative:?}, include_str!({:?})),", absolute.display().to_string()).unwrap();
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("catalog.rs");
    std::fs::write(out, code).expect("OUT_DIR is writable");
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}
