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

/// Positions of every node of one YAML document.
#[derive(Debug)]
pub struct Locator {
    root: Option<Node>,
}

impl Locator {
    /// Builds the position tree; a document that does not parse yields an empty locator.
    pub fn new(source: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(source);
        if parser.load(&mut builder, false).is_err() {
            return Locator { root: None };
        }
        Locator {
            root: builder.stack.pop().map(|(node, _)| node),
        }
    }

    /// Position of the value at `path`, or of its deepest existing ancestor.
    pub fn value(&self, path: &[Step]) -> Option<Pos> {
        self.walk(path).map(|(node, _)| node.pos())
    }

    /// Position of the key at the end of `path` (falls back to the value's position).
    pub fn key(&self, path: &[Step]) -> Option<Pos> {
        self.walk(path).map(|(node, key)| key.unwrap_or(node.pos()))
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
}
