//! Import circles between files of `src/`: fails on any, naming the files.
//!
//! docs/architecture.md ("Layers and imports") states the rule: within the
//! library, the arrows between files go one way. A circle (`a` uses `b`,
//! `b` uses `a`, directly or through other files) means a shared type lives
//! in the wrong file; the fix is to move it into a leaf module both can use.
//!
//! The checker is a small parser, not a compiler: it reads each file's `use`
//! declarations and the `crate::`/`super::`/child-module paths written in its
//! code (comments and strings skipped; test modules count), resolves
//! each to the file that defines the named module, and follows `pub use`
//! re-exports of a `mod.rs` to the file that really defines the item. It
//! then looks for strongly connected groups of files. A module's file
//! (`mod.rs`, or `name.rs` beside `name/`) is its front: its arrows to its own children (declaring, re-exporting,
//! driving them) are not counted, so children may use what it defines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Circles made only of files under these paths are tolerated (none now:
/// the config's unit parsers moved to the leaf `src/config/units.rs`).
const ALLOWED_CIRCLE_DIRS: &[&str] = &[];

/// One source file of the library and the module it is.
struct File {
    path: String,
    module: Vec<String>,
    text: String,
}

fn main_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file from its place under `src/` (`#[path]` test
/// files are found later from their parent's declaration).
fn module_of(rel: &Path) -> Option<Vec<String>> {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.first().map(String::as_str) == Some("bin") {
        return None;
    }
    let mut module: Vec<String> = parts[..parts.len() - 1].to_vec();
    let last = parts.last()?.trim_end_matches(".rs").to_string();
    if last != "mod" && last != "lib" {
        module.push(last);
    }
    Some(module)
}

/// Loads every library file, giving `#[path = "x.rs"] mod m;` files the
/// module of their declaration.
fn load(src: &Path) -> Vec<File> {
    let mut paths = Vec::new();
    rs_files(src, &mut paths);
    paths.sort();
    let mut files = Vec::new();
    let mut by_path: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for p in &paths {
        let rel = p.strip_prefix(src).expect("under src");
        let text = std::fs::read_to_string(p).expect("read source");
        by_path.insert(p.clone(), files.len());
        files.push(File {
            path: format!("src/{}", rel.display()),
            module: module_of(rel).unwrap_or_default(),
            text,
        });
    }
    // `#[path]` declarations override the module the file's place suggests.
    let mut renamed = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let lines: Vec<&str> = files[i].text.lines().collect();
        for w in lines.windows(2) {
            let attr = w[0].trim();
            if let Some(rest) = attr.strip_prefix("#[path = \"")
                && let Some(target) = rest.strip_suffix("\"]")
                && let Some(name) = w[1]
                    .trim()
                    .trim_start_matches("pub ")
                    .strip_prefix("mod ")
                    .and_then(|r| r.strip_suffix(';'))
            {
                let target = p.parent().expect("parent").join(target);
                if let Some(&j) = by_path.get(&target) {
                    let mut module = files[i].module.clone();
                    module.push(name.to_string());
                    renamed.push((j, module));
                }
            }
        }
    }
    for (j, module) in renamed {
        files[j].module = module;
    }
    // Binaries are not part of the library's module tree.
    files.retain(|f| !f.path.starts_with("src/bin/"));
    files
}

/// The code of a file with comments, string literals and inline `mod x {}`
/// blocks removed, as (line, extra `super` depth) pairs: inside an inline
/// module `super` names the file's own module.
fn code_lines(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut inline: Vec<usize> = Vec::new(); // indentation of open inline mods
    for raw in text.lines() {
        let indent = raw.len() - raw.trim_start().len();
        let trimmed = raw.trim();
        if trimmed == "}" && inline.last() == Some(&indent) {
            inline.pop();
            continue;
        }
        if trimmed.starts_with("//") || trimmed.starts_with("#[") {
            continue;
        }
        let decl = trimmed
            .trim_start_matches("pub ")
            .trim_start_matches("pub(crate) ");
        if decl.starts_with("mod ") && decl.ends_with('{') {
            inline.push(indent);
            continue;
        }
        out.push((strip_strings(raw), inline.len()));
    }
    out
}

/// Removes `"..."` literals and a trailing `//` comment from one line.
fn strip_strings(line: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_str = false,
                _ => {}
            }
        } else if c == '"' {
            in_str = true;
        } else if c == '/' && chars.peek() == Some(&'/') {
            break;
        } else {
            out.push(c);
        }
    }
    out
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into its paths.
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    // Drop renames (`x as y`), then all whitespace.
    let mut words: Vec<&str> = Vec::new();
    let mut it = tree.split_whitespace();
    while let Some(w) = it.next() {
        if w == "as" {
            let renamed = it.next().unwrap_or_default();
            // Keep the punctuation that followed the new name.
            words.push(renamed.trim_start_matches(is_ident));
        } else {
            words.push(w);
        }
    }
    let tree: String = words.concat();
    let mut out = Vec::new();
    expand_into(&tree, &mut Vec::new(), &mut out);
    out
}

fn expand_into(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    // Split off the leading path up to a `{`, if any.
    if let Some(open) = tree.find('{') {
        let head = &tree[..open];
        let close = tree.rfind('}').filter(|&c| c > open).unwrap_or(tree.len());
        let body = &tree[open + 1..close];
        let n = prefix.len();
        prefix.extend(
            head.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        for part in split_top(body) {
            expand_into(part, prefix, out);
        }
        prefix.truncate(n);
    } else {
        let path = tree;
        let mut full = prefix.clone();
        full.extend(
            path.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        if !full.is_empty() {
            out.push(full);
        }
    }
}

/// Splits `a, b::{c, d}, e` at its top-level commas.
fn split_top(body: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Paths written in code: runs of `ident::ident::...` starting at a word.
fn inline_paths(line: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if is_ident(bytes[i]) && (i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == ':')) {
            let mut segs = Vec::new();
            let mut j = i;
            loop {
                let s = j;
                while j < bytes.len() && is_ident(bytes[j]) {
                    j += 1;
                }
                segs.push(bytes[s..j].iter().collect::<String>());
                if j + 2 < bytes.len()
                    && bytes[j] == ':'
                    && bytes[j + 1] == ':'
                    && is_ident(bytes[j + 2])
                {
                    j += 2;
                } else {
                    break;
                }
            }
            if segs.len() > 1 {
                out.push(segs);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// The library's import graph between files (index to indices).
struct Graph {
    files: Vec<File>,
    edges: Vec<BTreeSet<usize>>,
}

impl Graph {
    fn build(files: Vec<File>) -> Graph {
        let by_module: BTreeMap<Vec<String>, usize> = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.module.clone(), i))
            .collect();
        // `pub use child::Name` in a module: Name really lives in that child.
        let mut reexports: BTreeMap<(usize, String), Vec<String>> = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            for stmt in use_statements(&f.text, true) {
                for path in expand_use(&stmt) {
                    if let Some(last) = path.last()
                        && last != "*"
                        && let Some(abs) = absolute(&f.module, 0, &path, &by_module)
                    {
                        reexports.insert((i, last.clone()), abs);
                    }
                }
            }
        }
        let mut edges = vec![BTreeSet::new(); files.len()];
        for (i, f) in files.iter().enumerate() {
            let lines = code_lines(&f.text);
            let mut paths: Vec<(Vec<String>, usize)> = Vec::new();
            let joined: Vec<(String, usize)> = join_statements(&lines);
            for (stmt, depth) in &joined {
                let s = stmt
                    .trim_start_matches("pub ")
                    .trim_start_matches("pub(crate) ");
                if let Some(tree) = s.strip_prefix("use ") {
                    for p in expand_use(tree.trim_end_matches(';')) {
                        paths.push((p, *depth));
                    }
                } else {
                    for p in inline_paths(stmt) {
                        paths.push((p, *depth));
                    }
                }
            }
            for (path, depth) in paths {
                let Some(abs) = absolute(&f.module, depth, &path, &by_module) else {
                    continue;
                };
                if let Some(j) = resolve(&abs, &by_module, &reexports)
                    && j != i
                    && !front_of(&files[i], &files[j])
                {
                    edges[i].insert(j);
                }
            }
        }
        Graph { files, edges }
    }

    /// Groups of two or more files that import each other, as file paths.
    fn circles(&self) -> Vec<Vec<String>> {
        let sccs = tarjan(&self.edges);
        let mut out: Vec<Vec<String>> = sccs
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut names: Vec<String> =
                    c.iter().map(|&i| self.files[i].path.clone()).collect();
                names.sort();
                names
            })
            .collect();
        out.sort();
        out
    }

    /// One concrete cycle through a group, for the failure message.
    fn example_cycle(&self, group: &[String]) -> Vec<String> {
        let idx: BTreeSet<usize> = group
            .iter()
            .map(|p| self.files.iter().position(|f| &f.path == p).expect("file"))
            .collect();
        let start = *idx.iter().next().expect("non-empty");
        // Breadth-first search from start back to start inside the group.
        let mut prev: BTreeMap<usize, usize> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(n) = queue.pop_front() {
            for &m in &self.edges[n] {
                if !idx.contains(&m) {
                    continue;
                }
                if m == start {
                    let mut cycle = vec![self.files[start].path.clone()];
                    let mut k = n;
                    while k != start {
                        cycle.push(self.files[k].path.clone());
                        k = prev[&k];
                    }
                    cycle.push(self.files[start].path.clone());
                    cycle.reverse();
                    return cycle;
                }
                if let std::collections::btree_map::Entry::Vacant(e) = prev.entry(m) {
                    e.insert(n);
                    queue.push_back(m);
                }
            }
        }
        group.to_vec()
    }
}

/// Joins the lines of each `use` statement (which may span lines).
fn join_statements(lines: &[(String, usize)]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut pending: Option<(String, usize)> = None;
    for (line, depth) in lines {
        let t = line.trim();
        if let Some((acc, d)) = pending.as_mut() {
            acc.push(' ');
            acc.push_str(t);
            if t.ends_with(';') {
                out.push((acc.clone(), *d));
                pending = None;
            }
            continue;
        }
        let s = t
            .trim_start_matches("pub ")
            .trim_start_matches("pub(crate) ");
        if s.starts_with("use ") && !t.ends_with(';') {
            pending = Some((t.to_string(), *depth));
        } else {
            out.push((t.to_string(), *depth));
        }
    }
    out
}

/// The `use` trees of a file (only `pub use` ones when `only_pub`), outside
/// inline modules.
fn use_statements(text: &str, only_pub: bool) -> Vec<String> {
    let lines: Vec<(String, usize)> = code_lines(text)
        .into_iter()
        .filter(|(_, d)| *d == 0)
        .collect();
    join_statements(&lines)
        .into_iter()
        .filter_map(|(s, _)| {
            let t = if only_pub {
                s.strip_prefix("pub use ")
                    .or_else(|| s.strip_prefix("pub(crate) use "))?
            } else {
                s.strip_prefix("use ")?
            };
            Some(t.trim_end_matches(';').to_string())
        })
        .collect()
}

/// Makes a path absolute (from the crate root), or `None` for paths into
/// other crates, locals and types.
fn absolute(
    module: &[String],
    depth: usize,
    path: &[String],
    by_module: &BTreeMap<Vec<String>, usize>,
) -> Option<Vec<String>> {
    let mut base: Vec<String> = module.to_vec();
    let mut rest = path;
    let mut extra = depth;
    match rest.first()?.as_str() {
        "crate" => {
            base.clear();
            rest = &rest[1..];
        }
        "self" => {
            rest = &rest[1..];
        }
        "super" => {
            while rest.first().map(String::as_str) == Some("super") {
                if extra > 0 {
                    extra -= 1;
                } else {
                    base.pop();
                }
                rest = &rest[1..];
            }
        }
        first => {
            // A child module named without `self::`.
            let mut child = module.to_vec();
            child.push(first.to_string());
            if !by_module.contains_key(&child) {
                return None;
            }
        }
    }
    let mut abs = base;
    abs.extend(rest.iter().cloned());
    Some(abs)
}

/// The file that defines what an absolute path names.
fn resolve(
    abs: &[String],
    by_module: &BTreeMap<Vec<String>, usize>,
    reexports: &BTreeMap<(usize, String), Vec<String>>,
) -> Option<usize> {
    let mut seen = 0;
    let mut path = abs.to_vec();
    loop {
        // Longest prefix that is a module file.
        let mut n = path.len();
        while n > 0 && !by_module.contains_key(&path[..n]) {
            n -= 1;
        }
        let file = *by_module.get(&path[..n])?;
        // The next segment may be re-exported from elsewhere.
        match path
            .get(n)
            .and_then(|name| reexports.get(&(file, name.clone())))
        {
            Some(target) if seen < 8 && target.as_slice() != path.as_slice() => {
                let mut next = target.clone();
                next.extend(path[n + 1..].iter().cloned());
                path = next;
                seen += 1;
            }
            _ => return Some(file),
        }
    }
}

/// Whether `from` is the file of a module that holds `to` (its `mod.rs`,
/// `lib.rs`, or a `name.rs` beside a `name/` directory: Rust does not care
/// which): a module's front declares, re-exports and drives its children,
/// so those arrows are not imports; its children may use what it defines.
fn front_of(from: &File, to: &File) -> bool {
    to.module.len() > from.module.len() && to.module.starts_with(&from.module)
}

/// Strongly connected components (Tarjan).
fn tarjan(edges: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        edges: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in s.edges[v].iter() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().expect("stack");
                s.on_stack[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(comp);
        }
    }
    let n = edges.len();
    let mut s = State {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

fn allowed(group: &[String]) -> bool {
    group
        .iter()
        .all(|f| ALLOWED_CIRCLE_DIRS.iter().any(|dir| f.starts_with(dir)))
}

#[test]
fn no_import_circles_between_library_files() {
    let graph = Graph::build(load(&main_src()));
    let bad: Vec<String> = graph
        .circles()
        .into_iter()
        .filter(|g| !allowed(g))
        .map(|g| {
            format!(
                "  {} files: {}\n    for instance {}",
                g.len(),
                g.join(", "),
                graph.example_cycle(&g).join(" -> ")
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "import circles (move the shared items into a leaf module; see \
         docs/architecture.md, \"Layers and imports\"):\n{}",
        bad.join("\n")
    );
}

/// The checker itself finds a circle, through `super::`, a child module
/// named without `self::` and a `mod.rs` re-export, and reports its files.
#[test]
fn the_checker_finds_a_circle_through_a_reexport() {
    let file = |path: &str, module: &[&str], text: &str| File {
        path: path.to_string(),
        module: module.iter().map(|s| s.to_string()).collect(),
        text: text.to_string(),
    };
    let files = vec![
        file(
            "src/w/mod.rs",
            &["w"],
            "mod a;\nmod b;\nmod key;\npub use key::Key;\n",
        ),
        file("src/w/a.rs", &["w", "a"], "use super::b::{self, Send};\n"),
        file(
            "src/w/b.rs",
            &["w", "b"],
            "use super::Key;\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::key::K;\n}\n",
        ),
        file(
            "src/w/key.rs",
            &["w", "key"],
            "// use crate::w::a::Y;\nconst S: &str = \"crate::w::a::Z\";\nfn f() { crate::w::a::run(); }\n",
        ),
    ];
    let graph = Graph::build(files);
    let circles = graph.circles();
    assert_eq!(
        circles,
        vec![vec![
            "src/w/a.rs".to_string(),
            "src/w/b.rs".to_string(),
            "src/w/key.rs".to_string()
        ]],
        "a -> b -> key (via the re-export) -> a (inline path); not the comment, string or test module"
    );
    assert!(!allowed(&circles[0]));
    assert_eq!(
        graph.example_cycle(&circles[0]),
        ["src/w/a.rs", "src/w/b.rs", "src/w/key.rs", "src/w/a.rs"]
    );
}

/// The core speaks its own language (docs/architecture.md, "The one idea"):
/// what it asks of a worker is a `WorkerCmd`, which the worker link says in
/// the wire's words. So a new protocol version leaves the core and its
/// simulator untouched: no file of `src/daemon/core/` names a worker
/// message of the protocol.
#[test]
fn the_core_names_no_worker_wire_message() {
    const WIRE: &[&str] = &[
        "MasterToWorker",
        "WorkerToMaster",
        "StepAssignment",
        "WireAction",
    ];
    let mut bad = Vec::new();
    for f in load(&main_src()) {
        if !f.path.starts_with("src/daemon/core/") {
            continue;
        }
        for (line, _) in code_lines(&f.text) {
            for word in WIRE {
                let named = line
                    .split(|c: char| !is_ident(c))
                    .any(|ident| ident == *word);
                if named {
                    bad.push(format!("{}: names {word}: {}", f.path, line.trim()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "the core must not speak the wire (use WorkerCmd; the worker link maps it):\n{}",
        bad.join("\n")
    );
}

/// The layers that would be crates of their own in a workspace (see
/// docs/architecture.md, "Why one crate") import only the layers below
/// them, so a wrong import fails here as it would fail to compile there:
/// the protocol is the bottom, and the core (decisions, no I/O) sees only
/// itself, the config's model and the protocol.
#[test]
fn the_pure_layers_import_only_the_layers_below() {
    const RULES: &[(&str, &[&str])] = &[
        ("src/protocol/", &["src/protocol/", "src/untrusted"]),
        (
            "src/daemon/core/",
            &[
                "src/daemon/core/",
                "src/config/",
                "src/protocol/",
                "src/untrusted",
            ],
        ),
    ];
    let graph = Graph::build(load(&main_src()));
    let mut bad = Vec::new();
    for (i, f) in graph.files.iter().enumerate() {
        let Some((layer, may)) = RULES.iter().find(|(dir, _)| f.path.starts_with(dir)) else {
            continue;
        };
        for &j in &graph.edges[i] {
            let to = &graph.files[j].path;
            if !may.iter().any(|m| to.starts_with(m)) {
                bad.push(format!(
                    "{} -> {to} (files of {layer} may import only {may:?})",
                    f.path
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports against the layers:\n{}",
        bad.join("\n")
    );
}
