//! docs/architecture.md's crate graph is generated from the manifests: this test renders it from
//! `cargo metadata` and fails when the document drifts. To rewrite the document:
//! `AUTOINTERP_BLESS=1 cargo test -p autointerp-run --test architecture`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

const START: &str = "<!-- crate-graph:start -->";
const END: &str = "<!-- crate-graph:end -->";
/// Longest line of the block, as the rest of the document.
const LINE: usize = 100;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Each workspace crate and the workspace crates it depends on (normal dependencies only).
fn crate_graph(root: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    ensure!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let packages = meta["packages"]
        .as_array()
        .context("cargo metadata: no `packages`")?;
    let names: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    let mut graph = BTreeMap::new();
    for p in packages {
        let name = p["name"].as_str().context("a package without a name")?;
        let deps = p["dependencies"]
            .as_array()
            .context("a package without `dependencies`")?
            .iter()
            // `kind` is null for normal dependencies, "dev" or "build" for the others.
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|d| names.contains(*d))
            .map(str::to_owned)
            .collect();
        graph.insert(name.to_owned(), deps);
    }
    Ok(graph)
}

/// How far a crate sits above the bottom: 0 for a crate with no workspace dependency, else one
/// more than its highest dependency.
fn height(
    name: &str,
    graph: &BTreeMap<String, BTreeSet<String>>,
    memo: &mut BTreeMap<String, usize>,
    path: &mut Vec<String>,
) -> Result<usize> {
    if let Some(&h) = memo.get(name) {
        return Ok(h);
    }
    if path.iter().any(|p| p == name) {
        bail!("dependency cycle: {} → {name}", path.join(" → "));
    }
    path.push(name.to_owned());
    let mut h = 0;
    for dep in &graph[name] {
        h = h.max(1 + height(dep, graph, memo, path)?);
    }
    path.pop();
    memo.insert(name.to_owned(), h);
    Ok(h)
}

/// One line per crate, highest first (ties alphabetical), each with its direct workspace
/// dependencies sorted: every crate's dependencies are listed below it.
fn render(graph: &BTreeMap<String, BTreeSet<String>>) -> Result<String> {
    let mut memo = BTreeMap::new();
    let mut rows = Vec::new();
    for name in graph.keys() {
        rows.push((height(name, graph, &mut memo, &mut Vec::new())?, name));
    }
    rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let width = graph.keys().map(String::len).max().unwrap_or(0);
    let indent = " ".repeat(width + " → ".chars().count());
    let mut block = String::new();
    for (_, name) in rows {
        let deps: Vec<&str> = graph[name].iter().map(String::as_str).collect();
        let deps = if deps.is_empty() {
            vec!["(no workspace crate)"]
        } else {
            deps
        };
        // Wrapped at `LINE` characters, continuation lines aligned under the first dependency.
        let mut line = format!("{name:<width$} → ");
        let mut used = indent.chars().count();
        for (i, dep) in deps.iter().enumerate() {
            let piece = if i + 1 < deps.len() {
                format!("{dep},")
            } else {
                (*dep).to_owned()
            };
            if i > 0 {
                if used + 1 + piece.chars().count() > LINE {
                    line += &format!("\n{indent}");
                    used = indent.chars().count();
                } else {
                    line.push(' ');
                    used += 1;
                }
            }
            line += &piece;
            used += piece.chars().count();
        }
        block += &line;
        block.push('\n');
    }
    Ok(block)
}

/// The document's text with the part between the markers replaced by `block` in a text fence.
fn with_block(doc: &str, block: &str) -> Result<String> {
    let start = doc
        .find(START)
        .with_context(|| format!("docs/architecture.md has no `{START}` line"))?;
    let end = doc
        .find(END)
        .with_context(|| format!("docs/architecture.md has no `{END}` line"))?;
    ensure!(start < end, "`{END}` comes before `{START}`");
    Ok(format!(
        "{}{START}\n```text\n{block}```\n{}",
        &doc[..start],
        &doc[end..]
    ))
}

#[test]
fn architecture_graph_matches_the_manifests() -> Result<()> {
    let root = workspace_root();
    let graph = crate_graph(&root)?;
    ensure!(
        graph.len() > 1,
        "cargo metadata listed {} crates",
        graph.len()
    );
    let block = render(&graph)?;
    let path = root.join("docs/architecture.md");
    let doc = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let expected = with_block(&doc, &block)?;
    if expected == doc {
        return Ok(());
    }
    if std::env::var_os("AUTOINTERP_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, expected).with_context(|| format!("{}", path.display()))?;
        eprintln!("rewrote the crate graph in {}", path.display());
        return Ok(());
    }
    panic!(
        "the crate graph in docs/architecture.md is out of date with the manifests; expected:\n\n\
         {START}\n```text\n{block}```\n{END}\n\n\
         rewrite it with `AUTOINTERP_BLESS=1 cargo test -p autointerp-run --test architecture`"
    )
}
