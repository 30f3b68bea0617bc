//! The architecture as the compiler cannot check it: the server's modules depend on each other
//! one way only (a layer uses only layers below it, so there is no import cycle), and a program
//! that wants only the protocol and its clients (`fanout-proto`) builds none of the server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The server's modules, lowest layer first. Data flows up this list: bytes → codec → session →
/// router → hub → outbox → bytes, with the reactor pumping at both ends. (`codec`, `rng` and
/// `backoff` come from `fanout-proto`, below all of these.)
const LAYERS: &[&[&str]] = &[
    &["limits", "error", "logging", "keyed_slab"],
    &["interest", "router", "outbox", "linger"],
    &["presence"],
    &["auth", "tls"],
    &["session"],
    &["cluster"],
    &["config"],
    &["link", "mailbox", "metrics"],
    &["hub"],
    &["metrics_server"],
    &["reactor"],
    &["server"],
];

/// Modules of the `fanout` binary rather than the library: they use the library by its name.
const BINARY_MODULES: &[&str] = &["main", "chat", "config_file"];

/// Modules `fanout` re-exports from `fanout-proto`: below every layer.
const FROM_PROTO: &[&str] = &["codec", "client", "failover", "rng", "backoff", "names"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a path").as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// The `crate::<module>` names a file uses, outside comments and outside its test module.
fn uses_of(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let code = line.split("//").next().unwrap_or("");
        if line.trim() == "#[cfg(test)]" && lines.peek().is_some_and(|next| next.trim_start().starts_with("mod tests"))
        {
            break; // tests may use anything
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn server_modules_depend_on_lower_layers_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
    for file in &files {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let module = module_of(&src, file);
        if module == "lib" || BINARY_MODULES.contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read a source file");
        for used in uses_of(&text) {
            if used != module && !FROM_PROTO.contains(&used.as_str()) {
                edges.entry((module.clone(), used)).or_insert_with(|| file.display().to_string());
            }
        }
    }
    let mut wrong = Vec::new();
    for ((from, to), file) in &edges {
        match (layer_of(from), layer_of(to)) {
            (Some(a), Some(b)) if b < a => {}
            (None, _) => wrong.push(format!("{from} is in no layer (add it to LAYERS)")),
            (_, None) => wrong.push(format!("{to} (used by {from}) is in no layer (add it to LAYERS)")),
            _ => wrong.push(format!("{from} uses {to}, which is not below it ({file})")),
        }
    }
    wrong.dedup();
    assert!(wrong.is_empty(), "module layering broken:\n{}", wrong.join("\n"));
    assert!(edges.len() > 20, "only {} dependencies found: is the scanner reading src/?", edges.len());
}

#[test]
fn the_protocol_crate_builds_none_of_the_server() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["tree", "--offline", "-p", "fanout-proto", "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    let tree = String::from_utf8_lossy(&output.stdout);
    let crates: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    for server_only in ["clap", "mio", "signal-hook", "rustyline", "hmac", "rlimit", "fanout"] {
        assert!(!crates.contains(&server_only), "fanout-proto depends on {server_only}:\n{tree}");
    }
    assert!(crates.contains(&"bytes") && crates.contains(&"memchr"), "unexpected tree:\n{tree}");
}
