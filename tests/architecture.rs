//! The import rules of ARCHITECTURE.md, checked: every `crate::` and `super::` path in
//! `src/` and `shm/src/` (and every `streamd::` path in `src/main.rs`) must reach only
//! what the table's "May use" column lists for the file's folder, and no file may import,
//! through other files, itself (an import cycle). The allow-list is read from the table
//! itself, so the document and the check cannot drift apart.
//!
//! What counts as an import: a path that names another module, in a `use` or inline. A
//! folder's `mod.rs` declaring its files and re-exporting them (`pub use child::X`) is
//! not one: that is the folder's own face.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The Rust source folders the table governs, with the crate each belongs to.
const CRATE_ROOTS: [(&str, &str); 2] = [("streamd", "src"), ("streamd-shm", "shm/src")];

#[test]
fn imports_follow_architecture_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let table = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let rules = Rules::parse(&table);
    let mut files = Vec::new();
    for (krate, dir) in CRATE_ROOTS {
        for path in rust_files(&root.join(dir)) {
            files.push(SourceFile::read(root, krate, &root.join(dir), &path));
        }
    }
    let mut problems = Vec::new();
    for file in &files {
        problems.extend(rules.check(file));
    }
    problems.extend(cycles(&files));
    assert!(
        problems.is_empty(),
        "imports that ARCHITECTURE.md forbids:\n{}",
        problems.join("\n")
    );
}

/// The check itself: a forbidden import and a cycle are found, with file and line.
#[test]
fn the_check_finds_a_forbidden_import_and_a_cycle() {
    let table = "| Path | Owns | May use | Must not use |\n|---|---|---|---|\n\
                 | `src/a/` | a | `b::Thing` | — |\n| `src/b/` | b | `a` | — |\n";
    let rules = Rules::parse(table);
    let a = SourceFile::parse(
        "streamd",
        "src/a/x.rs",
        vec!["a".into(), "x".into()],
        "use crate::b::{Thing, Other};\n// crate::b::Commented\nfn f() { super::y::g(); }\n",
    );
    let b = SourceFile::parse(
        "streamd",
        "src/b/mod.rs",
        vec!["b".into()],
        "use crate::a::x::f;\npub struct Thing;\n",
    );
    let problems = rules.check(&a);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("src/a/x.rs:1: `crate::b::Other`"),
        "{}",
        problems[0]
    );
    let found = cycles(&[a, b]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("src/a/x.rs:1") && found[0].contains("src/b/mod.rs:1"),
        "{}",
        found[0]
    );
}

/// What each area (a folder or file of the table) may use.
struct Rules {
    /// Area name (`ring`, `pipeline`, `main`) → its row's path and allowed paths.
    areas: BTreeMap<String, (String, Vec<Vec<String>>)>,
}

impl Rules {
    /// Reads the table: the first column's path names the area, the "May use" column's
    /// backticked names that are areas themselves (or items in them) are what it may use.
    fn parse(markdown: &str) -> Rules {
        let mut rows = Vec::new();
        for line in markdown.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (Some(&path), Some(may_use)) = (backticked(cells[1]).first(), cells.get(3)) else {
                continue;
            };
            if let Some(area) = area_of_row(path) {
                rows.push((area, path.to_string(), backticked(may_use)));
            }
        }
        let names: BTreeSet<String> = rows.iter().map(|(a, _, _)| a.clone()).collect();
        let areas = rows
            .into_iter()
            .map(|(area, path, uses)| {
                let allowed = uses
                    .iter()
                    .map(|u| u.split("::").map(str::to_string).collect::<Vec<_>>())
                    .filter(|segments| names.contains(&segments[0]))
                    .collect();
                (area, (path, allowed))
            })
            .collect();
        Rules { areas }
    }

    /// Every import of `file` its area may not make, one line each.
    fn check(&self, file: &SourceFile) -> Vec<String> {
        let Some((row, allowed)) = self.areas.get(&file.area) else {
            return vec![format!(
                "{}: its folder has no row in ARCHITECTURE.md's table; add one",
                file.shown
            )];
        };
        let mut problems = Vec::new();
        for import in &file.imports {
            let Some(first) = import.target.first() else {
                continue;
            };
            if *first == file.area || !self.areas.contains_key(first) {
                continue;
            }
            let permitted = allowed
                .iter()
                .any(|a| import.target.starts_with(a) || a.starts_with(&import.target));
            if !permitted {
                let list: Vec<String> = allowed.iter().map(|a| a.join("::")).collect();
                problems.push(format!(
                    "{}:{}: `{}` — `{row}` may use only {} (ARCHITECTURE.md); move the code or change the table",
                    file.shown,
                    import.line,
                    import.written,
                    if list.is_empty() { "nothing of the crate".to_string() } else { list.join(", ") }
                ));
            }
        }
        problems
    }
}

/// The area of a table row's path, or `None` for rows outside the crates' sources.
fn area_of_row(path: &str) -> Option<String> {
    let rest = CRATE_ROOTS
        .iter()
        .find_map(|(_, dir)| path.strip_prefix(&format!("{dir}/")))?;
    let first = rest.split('/').next()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    Some(name.to_string())
}

/// The `backticked` parts of a table cell.
fn backticked(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// One path to another module, as written and resolved from the crate root.
#[derive(Debug, Clone)]
struct Import {
    line: usize,
    written: String,
    target: Vec<String>,
}

struct SourceFile {
    krate: String,
    /// As shown in messages: relative to the workspace.
    shown: String,
    /// Module path from the crate root (`["pipeline", "worker"]`; `main.rs`: `["main"]`).
    module: Vec<String>,
    area: String,
    imports: Vec<Import>,
}

impl SourceFile {
    fn read(workspace: &Path, krate: &str, src: &Path, path: &Path) -> SourceFile {
        let relative = path.strip_prefix(src).expect("under src");
        let mut module: Vec<String> = relative
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if module.last().is_some_and(|m| m == "mod" || m == "lib") {
            module.pop();
        }
        let text = std::fs::read_to_string(path).expect("readable source");
        let shown = path
            .strip_prefix(workspace)
            .unwrap_or(path)
            .display()
            .to_string();
        SourceFile::parse(krate, &shown, module, &text)
    }

    fn parse(krate: &str, shown: &str, module: Vec<String>, text: &str) -> SourceFile {
        let code = blank_comments_and_literals(text);
        let is_main = module == ["main"];
        let imports = find_imports(&code, &module, is_main);
        SourceFile {
            krate: krate.to_string(),
            shown: shown.to_string(),
            area: module.first().cloned().unwrap_or_default(),
            module,
            imports,
        }
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("lib.rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// `text` with comments, string literals and char literals replaced by spaces (newlines
/// kept), so that what is left is code and byte offsets still give line numbers.
fn blank_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let rest = &chars[i..];
        let skip_to = if rest.starts_with(&['/', '/']) {
            rest.iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |p| i + p)
        } else if rest.starts_with(&['/', '*']) {
            (i + 2..chars.len() - 1)
                .find(|&j| chars[j] == '*' && chars[j + 1] == '/')
                .map_or(chars.len(), |j| j + 2)
        } else if rest[0] == 'r' && rest.get(1).is_some_and(|&c| c == '"' || c == '#') {
            let hashes = rest[1..].iter().take_while(|&&c| c == '#').count();
            if rest.get(1 + hashes) == Some(&'"') {
                let close: Vec<char> = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                (i + 2 + hashes..chars.len())
                    .find(|&j| chars[j..].starts_with(&close))
                    .map_or(chars.len(), |j| j + close.len())
            } else {
                i
            }
        } else if rest[0] == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            j + 1
        } else if rest[0] == '\'' && rest.get(1) == Some(&'\\') {
            (i + 2..chars.len())
                .find(|&j| chars[j] == '\'')
                .map_or(chars.len(), |j| j + 1)
        } else if rest[0] == '\'' && rest.get(2) == Some(&'\'') {
            i + 3
        } else {
            i
        };
        if skip_to > i {
            out.extend(chars[i..skip_to.min(chars.len())].iter().map(|&c| blank(c)));
            i = skip_to;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every `crate::`/`super::` path (`streamd::` in the binary), resolved against the
/// module path of the file and of the inline modules (`mod tests { .. }`) around it.
fn find_imports(code: &str, module: &[String], is_main: bool) -> Vec<Import> {
    let chars: Vec<char> = code.chars().collect();
    let mut imports = Vec::new();
    let mut line = 1;
    let mut depth = 0usize;
    // Inline modules open now: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut pending_mod: Option<String> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => line += 1,
            '{' => {
                depth += 1;
                if let Some(name) = pending_mod.take() {
                    inline.push((name, depth));
                }
            }
            '}' => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            ';' => pending_mod = None,
            _ => {}
        }
        let starts_word = i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == ':');
        if !starts_word || !is_ident(c) {
            i += 1;
            continue;
        }
        let word_end = (i..chars.len())
            .find(|&j| !is_ident(chars[j]))
            .unwrap_or(chars.len());
        let word: String = chars[i..word_end].iter().collect();
        if word == "mod" {
            let name_start = (word_end..chars.len()).find(|&j| !chars[j].is_whitespace());
            if let Some(s) = name_start {
                let e = (s..chars.len())
                    .find(|&j| !is_ident(chars[j]))
                    .unwrap_or(chars.len());
                pending_mod = Some(chars[s..e].iter().collect());
            }
        }
        let root = if is_main { "streamd" } else { "crate" };
        if (word == root || word == "super") && chars[word_end..].starts_with(&[':', ':']) {
            let (end, trees) = parse_use_tree(&chars, i);
            let written: String = chars[i..end].iter().collect::<String>();
            let written = written.split_whitespace().collect::<Vec<_>>().join(" ");
            let here: Vec<String> = module
                .iter()
                .cloned()
                .chain(inline.iter().map(|(n, _)| n.clone()))
                .collect();
            for segments in trees {
                if let Some(target) = resolve(&segments, &here) {
                    imports.push(Import {
                        line,
                        written: if written.contains('{') {
                            segments.join("::")
                        } else {
                            written.clone()
                        },
                        target,
                    });
                }
            }
            line += chars[i..end].iter().filter(|&&c| c == '\n').count();
            i = end;
            continue;
        }
        i = word_end;
    }
    imports
}

/// Parses a path or use tree starting at `start` (`crate::a::{b, c::d}`): where it ends,
/// and every full path it names.
fn parse_use_tree(chars: &[char], start: usize) -> (usize, Vec<Vec<String>>) {
    let mut i = start;
    let mut prefix = Vec::new();
    loop {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i < chars.len() && chars[i] == '{' {
            let mut paths = Vec::new();
            i += 1;
            loop {
                while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
                    i += 1;
                }
                if i >= chars.len() || chars[i] == '}' {
                    return (i + 1, paths);
                }
                let (end, inner) = parse_use_tree(chars, i);
                paths.extend(inner.into_iter().map(|p| [prefix.clone(), p].concat()));
                i = end;
            }
        }
        let end = (i..chars.len())
            .find(|&j| !is_ident(chars[j]))
            .unwrap_or(chars.len());
        if end == i {
            // `*` or nothing: the path so far.
            let end = if chars.get(i) == Some(&'*') { i + 1 } else { i };
            return (end, vec![prefix]);
        }
        prefix.push(chars[i..end].iter().collect::<String>());
        i = end;
        if chars[i..].starts_with(&[':', ':']) {
            i += 2;
        } else {
            return (i, vec![prefix]);
        }
    }
}

/// The path from the crate root that `segments` (starting `crate`, `streamd` or `super`)
/// names, from module `here`; `None` for `self` imports of the module itself.
fn resolve(segments: &[String], here: &[String]) -> Option<Vec<String>> {
    let mut at: Vec<String> = Vec::new();
    let mut rest = segments;
    if matches!(
        segments.first().map(String::as_str),
        Some("crate" | "streamd")
    ) {
        rest = &segments[1..];
    } else {
        at = here.to_vec();
        while rest.first().is_some_and(|s| s == "super") {
            at.pop()?;
            rest = &rest[1..];
        }
    }
    at.extend(rest.iter().filter(|s| *s != "self").cloned());
    Some(at)
}

/// Import cycles between files of one crate, each as one line naming every import on it.
fn cycles(files: &[SourceFile]) -> Vec<String> {
    // The file a path reaches: the longest prefix of it that is a module of the crate.
    let modules: BTreeMap<(&str, &[String]), usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| ((f.krate.as_str(), f.module.as_slice()), i))
        .collect();
    let edges: Vec<Vec<(usize, &Import)>> = files
        .iter()
        .map(|f| {
            f.imports
                .iter()
                .filter_map(|import| {
                    (1..=import.target.len())
                        .rev()
                        .find_map(|n| modules.get(&(f.krate.as_str(), &import.target[..n])))
                        .filter(|&&to| to != modules[&(f.krate.as_str(), f.module.as_slice())])
                        .map(|&to| (to, import))
                })
                .collect()
        })
        .collect();
    let mut found = Vec::new();
    let mut seen_cycles = BTreeSet::new();
    // 0 unvisited, 1 on the path, 2 done.
    let mut state = vec![0u8; files.len()];
    let mut path: Vec<(usize, Option<&Import>)> = Vec::new();
    #[allow(clippy::too_many_arguments)]
    fn visit<'a>(
        at: usize,
        via: Option<&'a Import>,
        files: &[SourceFile],
        edges: &'a [Vec<(usize, &'a Import)>],
        state: &mut [u8],
        path: &mut Vec<(usize, Option<&'a Import>)>,
        found: &mut Vec<String>,
        seen: &mut BTreeSet<Vec<usize>>,
    ) {
        if state[at] == 1 {
            let from = path
                .iter()
                .position(|(f, _)| *f == at)
                .expect("on the path");
            let mut members: Vec<usize> = path[from..].iter().map(|(f, _)| *f).collect();
            members.sort_unstable();
            if seen.insert(members) {
                let steps: Vec<(usize, &Import)> = path[from + 1..]
                    .iter()
                    .map(|(f, i)| (*f, i.expect("reached by an import")))
                    .chain(via.map(|i| (at, i)))
                    .collect();
                let mut text = String::from("import cycle:");
                let mut source = path[from].0;
                for (to, import) in steps {
                    text.push_str(&format!(
                        " {}:{} (`{}`) →",
                        files[source].shown, import.line, import.written
                    ));
                    source = to;
                }
                text.push_str(&format!(
                    " {}; make one side depend on the other only",
                    files[at].shown
                ));
                found.push(text);
            }
            return;
        }
        if state[at] == 2 {
            return;
        }
        state[at] = 1;
        path.push((at, via));
        for &(to, import) in &edges[at] {
            visit(to, Some(import), files, edges, state, path, found, seen);
        }
        path.pop();
        state[at] = 2;
    }
    for start in 0..files.len() {
        visit(
            start,
            None,
            files,
            &edges,
            &mut state,
            &mut path,
            &mut found,
            &mut seen_cycles,
        );
    }
    found
}
