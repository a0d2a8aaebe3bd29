//! The layering rules of docs/architecture.md, checked on the source text: only `store` names
//! redb, only `api` and `server` speak HTTP, `app` knows no feature module, nothing but
//! `main` imports `server`, handlers call domain functions (never other handlers, never the
//! Clockify client), and no two files import each other in a loop. Also: every route of the
//! route table is described in the add-on's OpenAPI document.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::support::*;

/// Every `.rs` file under src/, by path relative to src/, with test modules cut off.
fn sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                // Unit tests sit in a `mod tests` at the end of a file; they may reach anywhere.
                let code = match text.find("#[cfg(test)]\nmod tests") {
                    Some(at) => text[..at].to_string(),
                    None => text,
                };
                let relative = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                out.insert(relative, code);
            }
        }
    }
    let root = repo_file("src");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// Lines of code, comments left out (a doc comment may name anything).
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim_start)
        .filter(|l| !l.starts_with("//"))
}

fn offenders(
    files: &BTreeMap<String, String>,
    allowed: impl Fn(&str) -> bool,
    needles: &[&str],
) -> Vec<String> {
    let mut out = Vec::new();
    for (file, text) in files {
        if allowed(file) {
            continue;
        }
        for line in code_lines(text) {
            if let Some(needle) = needles.iter().find(|n| line.contains(*n)) {
                out.push(format!("{file}: {needle} in `{}`", line.trim()));
            }
        }
    }
    out
}

#[test]
fn only_the_store_names_redb() {
    let files = sources();
    let found = offenders(&files, |f| f.starts_with("store/"), &["redb::", "use redb"]);
    assert!(found.is_empty(), "redb outside src/store/: {found:#?}");
}

#[test]
fn only_the_http_layer_speaks_http() {
    let files = sources();
    let http_layer = |f: &str| f.starts_with("api/") || f == "server.rs";
    let found = offenders(
        &files,
        http_layer,
        &["axum", "tower_http", "IntoResponse", "StatusCode"],
    );
    assert!(
        found.is_empty(),
        "HTTP outside src/api/ and src/server.rs: {found:#?}"
    );
    // hyper serves in the HTTP layer; its client sends destination attempts and flow HTTP
    // actions from the one outbound module (as ureq sends Clockify calls from the client).
    let found = offenders(
        &files,
        |f| http_layer(f) || f == "destinations/outbound.rs",
        &["hyper"],
    );
    assert!(
        found.is_empty(),
        "hyper outside the HTTP layer and the outbound client: {found:#?}"
    );
}

#[test]
fn handlers_call_domain_functions_not_handlers_or_the_client() {
    let files = sources();
    let outside_api = |f: &str| !f.starts_with("api/");
    let found = offenders(&files, outside_api, &[".clockify.send", "ApiClient::new"]);
    assert!(
        found.is_empty(),
        "the HTTP layer calls Clockify itself: {found:#?}"
    );
    // Calling a handler means building its extractors by hand, e.g. `get(State(app), user)`.
    let found = offenders(&files, |_| false, &["(State(", "State(app.clone())"]);
    let built: Vec<_> = found
        .into_iter()
        .filter(|l| !l.contains("): State<"))
        .collect();
    assert!(
        built.is_empty(),
        "a handler called like a function: {built:#?}"
    );
}

/// The module path of a file (`api/events.rs` → `api::events`, `store/mod.rs` → `store`).
fn module_of(file: &str) -> String {
    let path = file.trim_end_matches(".rs");
    let path = path.strip_suffix("/mod").unwrap_or(path);
    let path = if path == "lib" || path == "main" {
        ""
    } else {
        path
    };
    path.replace('/', "::")
}

/// Expands a use tree (`crate::a::{b, c::{d, e}}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    fn go(prefix: &str, tree: &str, out: &mut Vec<String>) {
        match tree.find('{') {
            None => {
                let item = tree.split(" as ").next().unwrap_or(tree);
                out.push(if prefix.is_empty() {
                    item.to_string()
                } else {
                    format!("{prefix}{item}")
                });
            }
            Some(open) => {
                let head = &tree[..open];
                let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            go(&format!("{prefix}{head}"), &inner[start..i], out);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                if start < inner.len() {
                    go(&format!("{prefix}{head}"), &inner[start..], out);
                }
            }
        }
    }
    let mut out = Vec::new();
    go("", &tree, &mut out);
    out
}

/// Every module path a file refers to: its `use` trees and inline `crate::…` paths, with
/// `super::` and `self::` made absolute.
fn references(module: &str, text: &str) -> Vec<String> {
    let code: String = code_lines(text).collect::<Vec<_>>().join("\n");
    let mut paths = Vec::new();
    // `use` statements start a line (after any `pub`, `pub(crate)`, …) and end at `;`.
    let mut statement: Option<String> = None;
    for line in code.lines() {
        let start = line
            .strip_prefix("use ")
            .or_else(|| line.strip_prefix("pub use "))
            .or_else(|| {
                line.split_once(") use ")
                    .filter(|(p, _)| p.starts_with("pub("))
                    .map(|(_, r)| r)
            });
        let mut current = match (statement.take(), start) {
            (Some(open), _) => open + line,
            (None, Some(rest)) => rest.to_string(),
            (None, None) => continue,
        };
        match current.find(';') {
            Some(end) => {
                current.truncate(end);
                paths.extend(expand(&current));
            }
            None => statement = Some(current),
        }
    }
    for (at, _) in code.match_indices("crate::") {
        let tail: String = code[at..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        paths.push(tail);
    }
    // `super` is the parent module (a mod.rs file is its folder's module).
    let base = module
        .rsplit_once("::")
        .map_or(String::new(), |(p, _)| p.to_string());
    paths
        .into_iter()
        .filter_map(|p| {
            let p = p.trim_end_matches("::");
            if let Some(rest) = p.strip_prefix("crate::") {
                return Some(rest.to_string());
            }
            if let Some(rest) = p.strip_prefix("super::") {
                return Some(if base.is_empty() {
                    rest.to_string()
                } else {
                    format!("{base}::{rest}")
                });
            }
            p.strip_prefix("self::")
                .map(|rest| format!("{module}::{rest}"))
        })
        .collect()
}

/// File → files it imports (each path resolved to the deepest module that is a file).
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = sources();
    let by_module: BTreeMap<String, String> =
        files.keys().map(|f| (module_of(f), f.clone())).collect();
    let mut graph = BTreeMap::new();
    for (file, text) in &files {
        let module = module_of(file);
        let mut targets = BTreeSet::new();
        for path in references(&module, text) {
            let mut candidate = path.as_str();
            loop {
                if let Some(target) = by_module.get(candidate) {
                    if target != file && !candidate.is_empty() {
                        targets.insert(target.clone());
                    }
                    break;
                }
                match candidate.rsplit_once("::") {
                    Some((shorter, _)) => candidate = shorter,
                    None => break,
                }
            }
        }
        graph.insert(file.clone(), targets);
    }
    graph
}

/// The strongly connected components with more than one file (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn no_two_files_import_each_other_in_a_loop() {
    let graph = import_graph();
    assert!(
        graph["api/events.rs"].contains("api/error.rs"),
        "the graph is read: {graph:#?}"
    );
    assert!(
        graph["flows/engine.rs"].contains("app.rs"),
        "{:?}",
        graph["flows/engine.rs"]
    );
    let found = cycles(&graph);
    assert!(found.is_empty(), "import cycles: {found:#?}");
    // The check itself finds a loop when there is one.
    let mut looped = graph.clone();
    looped
        .get_mut("app.rs")
        .unwrap()
        .insert("api/mod.rs".into());
    assert!(!cycles(&looped).is_empty());
}

#[test]
fn the_state_knows_no_feature_and_only_main_knows_the_server() {
    let graph = import_graph();
    let allowed = [
        "clockify",
        "config.rs",
        "locks.rs",
        "manifest.rs",
        "store",
        "telemetry.rs",
        "tickets.rs",
    ];
    let app_imports: Vec<&String> = graph["app.rs"]
        .iter()
        .filter(|f| !allowed.iter().any(|a| f.starts_with(a)))
        .collect();
    assert!(
        app_imports.is_empty(),
        "app.rs imports feature modules: {app_imports:?}"
    );
    let servers: Vec<&String> = graph
        .iter()
        .filter(|(file, targets)| *file != "main.rs" && targets.contains("server.rs"))
        .map(|(file, _)| file)
        .collect();
    assert!(
        servers.is_empty(),
        "only main.rs may import server: {servers:?}"
    );
    // Domain modules do not reach up into the HTTP layer.
    let up: Vec<String> = graph
        .iter()
        .filter(|(file, _)| !file.starts_with("api/") && *file != "server.rs" && *file != "lib.rs")
        .flat_map(|(file, targets)| {
            targets
                .iter()
                .filter(|t| t.starts_with("api/"))
                .map(move |t| format!("{file} -> {t}"))
        })
        .collect();
    assert!(up.is_empty(), "{up:#?}");
}

#[test]
fn every_route_is_in_the_openapi_document() {
    let server = TestServer::start();
    let r = server.get("/api/openapi.json", &[]);
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let table = std::fs::read_to_string(repo_file("src/api/mod.rs")).unwrap();
    // Aliases of documented routes, and the HTML page and its assets.
    let undocumented = [
        "/health",
        "/ready",
        "/manifest.json",
        "/lifecycle/uninstalled",
    ];
    let mut routes = BTreeSet::new();
    for (at, _) in table.match_indices(".route(") {
        let path: String = table[at + 7..]
            .trim_start()
            .trim_start_matches('"')
            .chars()
            .take_while(|c| *c != '"')
            .collect();
        if !undocumented.contains(&path.as_str()) {
            routes.insert(path);
        }
    }
    assert!(routes.len() > 30, "{routes:?}");
    let missing: Vec<_> = routes.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&routes).collect();
    assert!(
        extra.is_empty(),
        "documented paths that are no route: {extra:?}"
    );
    // Every error response is the one error body.
    let error_schema = &doc["components"]["schemas"]["ErrorBody"];
    assert!(
        error_schema["properties"]["code"].is_object(),
        "{error_schema}"
    );
}
