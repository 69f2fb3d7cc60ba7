//! One worker: a task that owns one running copy of the scorer program, writes
//! it requests, matches its replies by id, and restarts it when it crashes,
//! writes a line that is not a reply, or keeps a request waiting too long.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::super::Scored;

/// How to start the program.
#[derive(Debug)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The spec's folder: the program's working directory.
    pub dir: PathBuf,
    /// How long the oldest request may wait for its reply.
    pub timeout: Duration,
    /// Key variables removed from its environment.
    pub hidden: Vec<String>,
}

/// What a sample's task hears back: the score, or why there is none.
pub type Answer = Result<Scored, String>;

/// One sample's request: its id, its line (newline included) and where the answer goes.
pub struct Request {
    pub id: u64,
    pub line: Vec<u8>,
    pub reply: oneshot::Sender<Answer>,
}

/// Starts a worker; it stops (closing the program's stdin) when the sender drops.
pub fn spawn(launch: Arc<Launch>) -> mpsc::UnboundedSender<Request> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(Worker::new(launch).run(rx));
    tx
}

/// The stderr kept for error messages: at most this many lines and bytes.
/// The longest reply line read: a longer one is not a reply, and is not held in memory.
const MAX_REPLY_LINE: usize = 1 << 20;

const TAIL_LINES: usize = 20;
const TAIL_BYTES: usize = 2048;

/// The last lines a program wrote to stderr.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, line: String) {
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.lines.len() > TAIL_LINES || (self.bytes > TAIL_BYTES && self.lines.len() > 1) {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    fn text(&self) -> String {
        let text = self.lines.iter().cloned().collect::<Vec<_>>().join(" | ");
        if text.len() <= TAIL_BYTES {
            return text;
        }
        let mut cut = text.len() - TAIL_BYTES;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        format!("...{}", &text[cut..])
    }
}

/// The program's stdout as reply lines of at most [`MAX_REPLY_LINE`] bytes.
struct ReplyLines {
    reader: BufReader<ChildStdout>,
    /// The line read so far: kept across calls, so a `select!` that drops
    /// [`next`](Self::next) loses nothing.
    buf: Vec<u8>,
}

impl ReplyLines {
    /// The next line without its newline, `Err` for one over the cap (the
    /// program is then restarted), `None` at the end of the output.
    async fn next(&mut self) -> std::io::Result<Option<Result<String, String>>> {
        loop {
            let room = (MAX_REPLY_LINE + 1).saturating_sub(self.buf.len()) as u64;
            let n = (&mut self.reader)
                .take(room)
                .read_until(b'\n', &mut self.buf)
                .await?;
            if self.buf.last() == Some(&b'\n') {
                self.buf.pop();
                let line = std::mem::take(&mut self.buf);
                return Ok(Some(Ok(String::from_utf8_lossy(&line).into_owned())));
            }
            if self.buf.len() > MAX_REPLY_LINE {
                self.buf = Vec::new();
                return Ok(Some(Err(format!(
                    "wrote a line longer than {} MiB",
                    MAX_REPLY_LINE >> 20
                ))));
            }
            if n == 0 {
                return Ok(None);
            }
        }
    }
}

/// A running copy of the program.
struct Running {
    child: Child,
    stdin: mpsc::UnboundedSender<Vec<u8>>,
    stdout: ReplyLines,
    stderr: Arc<Mutex<Tail>>,
    stderr_done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the program (killed if `kill`, else given a moment to exit after
    /// stdin closes) and returns how it ended and the tail of its stderr.
    async fn stop(mut self, kill: bool) -> (Option<ExitStatus>, String) {
        drop(self.stdin);
        if kill {
            let _ = self.child.start_kill();
        }
        let status = match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        };
        // stderr closes when the program exits (unless a child of its own holds it).
        let _ = tokio::time::timeout(Duration::from_millis(500), &mut self.stderr_done).await;
        self.stderr_done.abort();
        let tail = self.stderr.lock().map(|t| t.text()).unwrap_or_default();
        (status, tail)
    }
}

/// A request sent and not answered yet.
struct Pending {
    line: Vec<u8>,
    reply: oneshot::Sender<Answer>,
}

struct Worker {
    launch: Arc<Launch>,
    running: Option<Running>,
    /// By id, which is also the order they were sent in: the first is the oldest.
    pending: BTreeMap<u64, Pending>,
    /// When the oldest pending request became the oldest.
    head_since: Instant,
}

/// What the worker waits for next.
enum Event {
    Request(Option<Request>),
    Line(std::io::Result<Option<Result<String, String>>>),
    Timeout,
}

impl Worker {
    fn new(launch: Arc<Launch>) -> Self {
        Worker {
            launch,
            running: None,
            pending: BTreeMap::new(),
            head_since: Instant::now(),
        }
    }

    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        loop {
            if self.running.is_none() && !self.pending.is_empty() {
                self.restart();
            }
            let deadline = self.head_since + self.launch.timeout;
            let event = match &mut self.running {
                Some(running) => tokio::select! {
                    r = requests.recv() => Event::Request(r),
                    line = running.stdout.next() => Event::Line(line),
                    _ = tokio::time::sleep_until(deadline), if !self.pending.is_empty() => Event::Timeout,
                },
                None => Event::Request(requests.recv().await),
            };
            match event {
                Event::Request(None) => break,
                Event::Request(Some(request)) => self.send(request),
                Event::Line(Ok(Some(Ok(line)))) => self.reply(&line).await,
                Event::Line(Ok(Some(Err(what)))) => self.fail_oldest(true, &what).await,
                Event::Line(Ok(None) | Err(_)) => {
                    self.fail_oldest(false, "exited before replying to this sample")
                        .await
                }
                Event::Timeout => {
                    let what = format!(
                        "gave no reply within {}",
                        humantime::format_duration(self.launch.timeout)
                    );
                    self.fail_oldest(true, &what).await
                }
            }
        }
        if let Some(running) = self.running.take() {
            running.stop(false).await;
        }
    }

    /// Starts the program and sends it every pending request again, in order;
    /// when it cannot start, every pending request is answered with why.
    fn restart(&mut self) {
        match self.start() {
            Ok(running) => {
                for p in self.pending.values() {
                    let _ = running.stdin.send(p.line.clone());
                }
                self.running = Some(running);
                self.head_since = Instant::now();
            }
            Err(e) => {
                for (_, p) in std::mem::take(&mut self.pending) {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn start(&self) -> Result<Running, String> {
        let l = &self.launch;
        let mut command = Command::new(&l.program);
        for var in &l.hidden {
            command.env_remove(var);
        }
        let mut child = command
            .args(&l.args)
            .current_dir(&l.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start `{}`: {e}", l.program.display()))?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("the scorer's pipes were not opened".into());
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        // Writes on their own task, so a program slow to read never stops the
        // worker from reading its replies; queued lines go out in one write.
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while let Some(line) = rx.recv().await {
                batch.clear();
                batch.extend_from_slice(&line);
                while let Ok(more) = rx.try_recv() {
                    batch.extend_from_slice(&more);
                }
                if stdin.write_all(&batch).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
        });
        let tail = Arc::new(Mutex::new(Tail::default()));
        let keep = Arc::clone(&tail);
        let stderr_done = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut t) = keep.lock() {
                    t.push(line);
                }
            }
        });
        Ok(Running {
            child,
            stdin: tx,
            stdout: ReplyLines {
                reader: BufReader::new(stdout),
                buf: Vec::new(),
            },
            stderr: tail,
            stderr_done,
        })
    }

    fn send(&mut self, request: Request) {
        if self.running.is_none() {
            self.pending.insert(
                request.id,
                Pending {
                    line: request.line,
                    reply: request.reply,
                },
            );
            // The loop starts the program and sends every pending request.
            return;
        }
        if self.pending.is_empty() {
            self.head_since = Instant::now();
        }
        if let Some(running) = &self.running {
            let _ = running.stdin.send(request.line.clone());
        }
        self.pending.insert(
            request.id,
            Pending {
                line: request.line,
                reply: request.reply,
            },
        );
    }

    /// One line from the program's stdout.
    async fn reply(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let Some((id, answer)) = parse_reply(line) else {
            let shown: String = line.chars().take(200).collect();
            let what = format!("wrote a line that is not a JSON reply: `{shown}`");
            return self.fail_oldest(true, &what).await;
        };
        let oldest = self.pending.keys().next().copied();
        let Some(p) = self.pending.remove(&id) else {
            let what = format!("replied to id {id}, which it was not asked (or already answered)");
            return self.fail_oldest(true, &what).await;
        };
        if oldest == Some(id) {
            self.head_since = Instant::now();
        }
        let _ = p.reply.send(answer);
    }

    /// Stops the program (killing it when `kill`) and leaves the oldest pending
    /// request unscored because it `what`; the loop starts the program again
    /// for the others.
    async fn fail_oldest(&mut self, kill: bool, what: &str) {
        let Some(running) = self.running.take() else {
            return;
        };
        let (status, tail) = running.stop(kill).await;
        let Some((_, p)) = self.pending.pop_first() else {
            return;
        };
        let mut message = format!("the scorer program {what}");
        match status {
            Some(s) if !kill => message.push_str(&format!(" ({s})")),
            _ => {}
        }
        if kill {
            message.push_str("; it was restarted");
        }
        if !tail.is_empty() {
            message.push_str(&format!("; its stderr ended: {tail}"));
        }
        let _ = p.reply.send(Err(message));
    }
}

/// A reply line: its id and the answer, or `None` when the line is no JSON
/// object with a number `id`.
fn parse_reply(line: &str) -> Option<(u64, Answer)> {
    let serde_json::Value::Object(mut reply) = serde_json::from_str(line).ok()? else {
        return None;
    };
    let id = reply.get("id")?.as_u64()?;
    if let Some(error) = reply.remove("error").filter(|e| !e.is_null()) {
        let text = match error {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        return Some((id, Err(format!("the scorer program says: {text}"))));
    }
    let score = match reply.get("score") {
        Some(serde_json::Value::Bool(b)) => Some(if *b { 1.0 } else { 0.0 }),
        Some(v) => v.as_f64(),
        None => None,
    };
    let Some(score) = score else {
        return Some((
            id,
            Err("the scorer program replied without a number `score`".into()),
        ));
    };
    let reason = match reply.remove("reason") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    };
    Some((
        id,
        Ok(Scored {
            score,
            reason,
            judged: None,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_leniently_but_need_an_id() {
        let ok = |line| match parse_reply(line) {
            Some((id, Ok(s))) => (id, s.score, s.reason),
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(ok(r#"{"id": 3, "score": 0.5}"#), (3, 0.5, None));
        assert_eq!(
            ok(r#"{"id": 3, "score": true, "reason": "ok"}"#),
            (3, 1.0, Some("ok".into()))
        );
        assert!(
            matches!(parse_reply(r#"{"id": 1, "error": "boom"}"#), Some((1, Err(e))) if e.ends_with("says: boom"))
        );
        assert!(matches!(parse_reply(r#"{"id": 1}"#), Some((1, Err(_)))));
        for garbage in [
            "hello",
            "[1]",
            r#"{"score": 1}"#,
            r#"{"id": "x", "score": 1}"#,
        ] {
            assert!(parse_reply(garbage).is_none(), "{garbage}");
        }
    }

    #[test]
    fn the_tail_keeps_the_last_lines_within_bounds() {
        let mut t = Tail::default();
        for i in 0..100 {
            t.push(format!("line {i}"));
        }
        assert_eq!(t.lines.len(), TAIL_LINES);
        assert!(t.text().ends_with("line 99"));
        t.push("x".repeat(5000));
        assert!(t.text().len() <= TAIL_BYTES + 3);
    }
}
