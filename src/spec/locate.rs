//! Maps a path inside a YAML document (`evaluators[0].expected`) to the line and
//! column where it is written, so errors found after deserialization still point
//! at the user's text. serde_yaml drops positions once it has built a value; this
//! keeps a lightweight tree of positions built from yaml-rust2's marked events.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One step of a path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A key in a mapping.
    Key(String),
    /// An index in a sequence.
    Index(usize),
}

/// Where a node starts, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Pos {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

#[derive(Debug)]
enum Node {
    Scalar(Pos),
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<(String, Pos, Node)>),
}

impl Node {
    fn pos(&self) -> Pos {
        match self {
            // A block mapping's start event is reported past its first key; the
            // first key is where a reader sees the mapping begin.
            Node::Map(_, entries) if !entries.is_empty() => entries[0].1,
            Node::Scalar(p) | Node::Seq(p, _) | Node::Map(p, _) => *p,
        }
    }
}

/// The deepest nesting of mappings and lists a spec may have. Real specs stay
/// under 15 levels (a JSON Schema inside an evaluator included); YAML parsers take
/// time quadratic in the depth, so a 100,000-level document would take minutes.
pub const MAX_DEPTH: usize = 64;

/// Positions of every node of one YAML document.
#[derive(Debug)]
pub struct Locator {
    root: Option<Node>,
    /// Where the document first nests deeper than [`MAX_DEPTH`]; reading stops there.
    too_deep: Option<Pos>,
}

impl Locator {
    /// Builds the position tree; a document that does not parse yields an empty
    /// locator, and one nested deeper than [`MAX_DEPTH`] is read no further.
    pub fn new(source: &str) -> Self {
        if let Some(pos) = deep_flow(source) {
            return Locator {
                root: None,
                too_deep: Some(pos),
            };
        }
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(source);
        let mut depth = 0usize;
        // Events are pulled one at a time (not `Parser::load`, which recurses) so
        // that a deep document stops at MAX_DEPTH + 1 levels.
        loop {
            let Ok((event, mark)) = parser.next_token() else {
                return Locator {
                    root: None,
                    too_deep: None,
                };
            };
            match event {
                Event::SequenceStart(..) | Event::MappingStart(..) => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Locator {
                            root: None,
                            too_deep: Some(Pos::from(mark)),
                        };
                    }
                }
                Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
                // Only the first document, as serde_yaml reads it.
                Event::DocumentEnd | Event::StreamEnd => break,
                _ => {}
            }
            builder.on_event(event, mark);
        }
        Locator {
            root: builder.stack.pop().map(|(node, _)| node),
            too_deep: None,
        }
    }

    /// Where the document nests deeper than [`MAX_DEPTH`], if it does.
    pub fn too_deep(&self) -> Option<Pos> {
        self.too_deep
    }

    /// Position of the value at `path`, or of its deepest existing ancestor.
    pub fn value(&self, path: &[Step]) -> Option<Pos> {
        self.walk(path).map(|(node, _)| node.pos())
    }

    /// Position of the key at the end of `path` (falls back to the value's position).
    pub fn key(&self, path: &[Step]) -> Option<Pos> {
        self.walk(path).map(|(node, key)| key.unwrap_or(node.pos()))
    }

    /// The path of the node or key written at `pos`, and whether it is the key:
    /// the inverse of [`Locator::key`] and [`Locator::value`]. The deepest node
    /// starting exactly at `pos` wins; failing that, the deepest one starting
    /// on its line at or before its column.
    pub fn path_at(&self, pos: Pos) -> Option<(Vec<Step>, bool)> {
        /// (exact position, column, depth) to rank by, the path, at the key.
        type Found = ((bool, usize, usize), Vec<Step>, bool);
        fn visit(
            node: &Node,
            path: &mut Vec<Step>,
            key: Option<Pos>,
            pos: Pos,
            best: &mut Option<Found>,
        ) {
            let mut consider = |at: Pos, is_key: bool, path: &Vec<Step>| {
                if at.line != pos.line || at.column > pos.column {
                    return;
                }
                let rank = (at == pos, at.column, path.len());
                if best.as_ref().is_none_or(|(r, _, _)| rank >= *r) {
                    *best = Some((rank, path.clone(), is_key));
                }
            };
            if let Some(k) = key {
                consider(k, true, path);
            }
            consider(node.pos(), false, path);
            match node {
                Node::Scalar(_) => {}
                Node::Seq(_, items) => {
                    for (i, item) in items.iter().enumerate() {
                        path.push(Step::Index(i));
                        visit(item, path, None, pos, best);
                        path.pop();
                    }
                }
                Node::Map(_, entries) => {
                    for (name, key_pos, value) in entries {
                        path.push(Step::Key(name.clone()));
                        visit(value, path, Some(*key_pos), pos, best);
                        path.pop();
                    }
                }
            }
        }
        let mut best = None;
        visit(self.root.as_ref()?, &mut Vec::new(), None, pos, &mut best);
        best.map(|(_, path, is_key)| (path, is_key))
    }

    fn walk(&self, path: &[Step]) -> Option<(&Node, Option<Pos>)> {
        let mut node = self.root.as_ref()?;
        let mut key_pos = None;
        for step in path {
            let next = match (node, step) {
                (Node::Map(_, entries), Step::Key(k)) => entries
                    .iter()
                    .find(|(name, _, _)| name == k)
                    .map(|(_, kp, v)| (v, Some(*kp))),
                (Node::Seq(_, items), Step::Index(i)) => items.get(*i).map(|v| (v, None)),
                _ => None,
            };
            match next {
                Some((n, kp)) => {
                    node = n;
                    key_pos = kp;
                }
                None => break,
            }
        }
        Some((node, key_pos))
    }
}

/// Where `source` first opens a flow collection (`[` or `{`) more than [`MAX_DEPTH`]
/// deep, found by one linear pass over the text. YAML scanners (yaml-rust2 and
/// libyaml alike) keep one possible key per open flow level and look at all of them
/// for every token, and a flow collection is scanned to its end before its first
/// event: 100,000 `[` take minutes before any depth count could stop them. Block
/// nesting costs a line or two per level and is counted on the parser's events.
///
/// Outside flow collections only a `[` or `{` where a node starts counts: at the
/// start of a line, after `- `, `? `, `: `, `---` or an anchor or tag. Quoted
/// scalars, comments and block scalars (`|`, `>`) are skipped. When unsure, this
/// reads text as YAML, so it can only overcount.
fn deep_flow(source: &str) -> Option<Pos> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        /// A node may start here.
        NodeStart,
        /// Inside a scalar; `: ` makes it a key and starts a node again.
        Scalar,
    }
    let ws = |c: Option<u8>| c.is_none_or(|c| c == b' ' || c == b'\t');
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    // The indentation a block scalar's content lines have more of.
    let mut block_scalar: Option<usize> = None;
    for (n, line) in source.lines().enumerate() {
        // Every character that matters is ASCII, so bytes will do.
        let chars = line.as_bytes();
        let indent = chars.iter().take_while(|c| **c == b' ').count();
        if quote.is_none() && depth == 0 {
            if let Some(parent) = block_scalar {
                if line.trim().is_empty() || indent > parent {
                    continue;
                }
                block_scalar = None;
            }
        }
        let mut mode = Mode::NodeStart;
        let mut key_column: Option<usize> = None;
        // The last `- ` of the line: a block scalar right after it (`- |`) has
        // content indented more than the dash, not more than the `|`.
        let mut dash_column: Option<usize> = None;
        let mut i = 0;
        if chars.starts_with(b"---") && ws(chars.get(3).copied()) {
            i = 3;
        }
        while i < chars.len() {
            let c = chars[i];
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1).copied();
            if let Some(q) = quote {
                if c == b'\\' && q == b'"' {
                    i += 2;
                    continue;
                }
                if c == q {
                    if q == b'\'' && next == Some(b'\'') {
                        i += 2;
                        continue;
                    }
                    quote = None;
                    mode = Mode::Scalar;
                }
                i += 1;
                continue;
            }
            if c == b'#' && ws(prev) {
                break;
            }
            if depth > 0 {
                match c {
                    b'[' | b'{' => {
                        depth += 1;
                        if depth > MAX_DEPTH {
                            return Some(Pos {
                                line: n + 1,
                                column: line[..i].chars().count() + 1,
                            });
                        }
                    }
                    b']' | b'}' => {
                        depth -= 1;
                        mode = Mode::Scalar;
                    }
                    b'"' | b'\'' if prev.is_none_or(|p| b" \t[{,:".contains(&p)) => quote = Some(c),
                    _ => {}
                }
                i += 1;
                continue;
            }
            match (mode, c) {
                (_, b' ' | b'\t') => {}
                (Mode::NodeStart, b'[' | b'{') => depth = 1,
                (Mode::NodeStart, b'"' | b'\'') => {
                    key_column.get_or_insert(i);
                    quote = Some(c);
                }
                (Mode::NodeStart, b'|' | b'>') => {
                    block_scalar = Some(key_column.or(dash_column).unwrap_or(i));
                    break;
                }
                (Mode::NodeStart, b'-') if ws(next) => dash_column = Some(i),
                (Mode::NodeStart, b'?' | b':') if ws(next) => {}
                (Mode::NodeStart, b'&' | b'!') => {
                    while i + 1 < chars.len() && !ws(Some(chars[i + 1])) {
                        i += 1;
                    }
                }
                (_, b':') if ws(next) => mode = Mode::NodeStart,
                (Mode::NodeStart, _) => {
                    key_column.get_or_insert(i);
                    mode = Mode::Scalar;
                }
                (Mode::Scalar, _) => {}
            }
            i += 1;
        }
    }
    None
}

/// Where the last key of `path` is first written in `source`, found by text.
/// A fallback for documents this parser reads differently from serde_yaml's.
pub fn find_key_text(source: &str, path: &[Step]) -> Option<Pos> {
    let key = path.iter().rev().find_map(|s| match s {
        Step::Key(k) => Some(k.as_str()),
        Step::Index(_) => None,
    })?;
    for (n, line) in source.lines().enumerate() {
        let mut from = 0;
        while let Some(i) = line[from..].find(key).map(|i| i + from) {
            let before = line[..i].chars().next_back();
            let after = line[i + key.len()..].trim_start().chars().next();
            if matches!(before, None | Some(' ' | '\t' | '{' | ',' | '-')) && after == Some(':') {
                return Some(Pos {
                    line: n + 1,
                    column: line[..i].chars().count() + 1,
                });
            }
            from = i + key.len();
        }
    }
    None
}

/// Parses a path as printed by serde_path_to_error: `a.b[2].c`.
pub fn parse_path(text: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for part in text.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            let key = &rest[..open];
            if !key.is_empty() {
                steps.push(Step::Key(key.to_owned()));
            }
            rest = &rest[open..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(close) = stripped.find(']') else {
                    break;
                };
                if let Ok(i) = stripped[..close].parse() {
                    steps.push(Step::Index(i));
                }
                rest = &stripped[close + 1..];
            }
        } else if !rest.is_empty() && rest != "?" {
            steps.push(Step::Key(rest.to_owned()));
        }
    }
    steps
}

/// Builds the tree from events; each open container waits on the stack with the
/// key it will be stored under in its parent.
#[derive(Default)]
struct Builder {
    /// Open nodes, each with a pending key (for maps: key awaiting its value).
    stack: Vec<(Node, Option<(String, Pos)>)>,
}

impl Builder {
    fn push_value(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.stack.push((node, None)),
            Some((Node::Seq(_, items), _)) => items.push(node),
            Some((Node::Map(_, entries), pending)) => match pending.take() {
                Some((key, key_pos)) => entries.push((key, key_pos, node)),
                None => {
                    // This node is a key. Only scalar keys are addressable.
                    let pos = node.pos();
                    *pending = Some((String::new(), pos));
                }
            },
            Some((Node::Scalar(_), _)) => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from(mark);
        match ev {
            Event::Scalar(text, ..) => {
                if let Some((Node::Map(..), pending @ None)) = self.stack.last_mut() {
                    *pending = Some((text, pos));
                } else {
                    self.push_value(Node::Scalar(pos));
                }
            }
            Event::Alias(_) => self.push_value(Node::Scalar(pos)),
            Event::SequenceStart(..) => self.stack.push((Node::Seq(pos, Vec::new()), None)),
            Event::MappingStart(..) => self.stack.push((Node::Map(pos, Vec::new()), None)),
            Event::SequenceEnd | Event::MappingEnd if self.stack.len() > 1 => {
                if let Some((node, _)) = self.stack.pop() {
                    self.push_value(node);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "name: x\nmodel:\n  provider: mock\nevaluators:\n  - type: exact_match\n    expected: \"{{ y }}\"\n";

    #[test]
    fn finds_nested_keys_and_values() {
        let loc = Locator::new(DOC);
        let p = parse_path("evaluators[0].expected");
        assert_eq!(loc.key(&p), Some(Pos { line: 6, column: 5 }));
        assert_eq!(
            loc.value(&p),
            Some(Pos {
                line: 6,
                column: 15
            })
        );
        assert_eq!(
            loc.key(&parse_path("model.provider")),
            Some(Pos { line: 3, column: 3 })
        );
    }

    #[test]
    fn missing_path_falls_back_to_deepest_ancestor() {
        let loc = Locator::new(DOC);
        assert_eq!(
            loc.value(&parse_path("model.nothere")),
            Some(Pos { line: 3, column: 3 })
        );
    }

    #[test]
    fn text_fallback_finds_keys() {
        let p = parse_path("evaluators[0].expected");
        assert_eq!(find_key_text(DOC, &p), Some(Pos { line: 6, column: 5 }));
        assert_eq!(
            find_key_text("a: {x: 1, expected: 2}", &p),
            Some(Pos {
                line: 1,
                column: 11
            })
        );
        assert_eq!(find_key_text("unexpected: 1", &p), None);
    }

    #[test]
    fn finds_the_path_written_at_a_position() {
        let loc = Locator::new(DOC);
        let at = |line, column| loc.path_at(Pos { line, column });
        assert_eq!(at(6, 5), Some((parse_path("evaluators[0].expected"), true)));
        assert_eq!(
            at(6, 15),
            Some((parse_path("evaluators[0].expected"), false))
        );
        // Inside a value: the node that starts before it on its line.
        assert_eq!(
            at(6, 20),
            Some((parse_path("evaluators[0].expected"), false))
        );
        assert_eq!(at(1, 7), Some((parse_path("name"), false)));
        assert_eq!(at(40, 1), None);
    }

    #[test]
    fn parses_paths() {
        assert_eq!(
            parse_path("a.b[2].c"),
            vec![
                Step::Key("a".into()),
                Step::Key("b".into()),
                Step::Index(2),
                Step::Key("c".into())
            ]
        );
    }

    fn deep(n: usize) -> String {
        format!("{}{}", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn flow_nesting_is_counted_where_nodes_start() {
        let at = |text: &str| deep_flow(text).map(|p| (p.line, p.column));
        assert_eq!(at(&format!("a: {}\n", deep(64))), None);
        assert_eq!(at(&format!("a: {}\n", deep(65))), Some((1, 68)));
        for text in [
            format!("- {}\n", deep(100)),
            format!("--- {}\n", deep(100)),
            format!("a: &x !!seq {}\n", deep(100)),
            format!("\"a\": {}\n", deep(100)),
            format!("a: [\"]]\", {}]\n", deep(100)),
            format!("a: [x, 'it''s ]', {}]\n", deep(100)),
            format!("- k: |\n    text\n  b: {}\n", deep(100)),
            format!("a: {{b: {}}}\n", "{c: ".repeat(100)),
        ] {
            assert!(at(&text).is_some(), "{text}");
        }
    }

    #[test]
    fn brackets_in_text_are_not_nesting() {
        let many = "[".repeat(100);
        for text in [
            format!("prompt: Classify {many} {{{{ text }}}}\n"),
            format!("prompt: \"{many}\"\n"),
            format!("prompt: '{many}'\n"),
            format!("prompt: |\n  {many}\n  more {many}\nname: x\n"),
            format!("- a: >-\n    {many}\n"),
            format!("a: b # {many}\n"),
            format!("a: [x, \"{many}\", '{many}'] # {many}\n"),
            format!("rows:\n  - |\n    {many}\n  - - >\n      {many}\n    - 1\n"),
        ] {
            assert_eq!(deep_flow(&text), None, "{text}");
        }
    }

    #[test]
    fn block_nesting_is_counted_on_events() {
        let text = format!("a:\n  {}x\n", "- ".repeat(100));
        assert!(Locator::new(&text).too_deep().is_some());
        let text = format!("a:\n  {}x\n", "- ".repeat(10));
        assert!(Locator::new(&text).too_deep().is_none());
    }
}
