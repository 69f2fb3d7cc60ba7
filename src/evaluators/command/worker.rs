//! One worker: a task that owns one running copy of the scorer program, writes
//! it requests, matches its replies by id, and restarts it when it crashes,
//! writes a line that is not a reply, or keeps a request waiting too long.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
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

/// The last lines a program wrote to stderr, numbered from its start.
#[derive(Default)]
struct Tail {
    lines: VecDeque<(u64, String)>,
    bytes: usize,
    /// Lines written so far: the number the next one gets.
    written: u64,
}

impl Tail {
    fn push(&mut self, line: String) {
        self.bytes += line.len();
        self.lines.push_back((self.written, line));
        self.written += 1;
        while self.lines.len() > TAIL_LINES || (self.bytes > TAIL_BYTES && self.lines.len() > 1) {
            if let Some((_, old)) = self.lines.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// The lines kept from line `from` on (another sample's are not this one's).
    fn text(&self, from: u64) -> String {
        let lines = self.lines.iter().filter(|(n, _)| *n >= from);
        let text = lines
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join(" | ");
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

/// The process group a program leads: killed whole, so a process it
/// started (the program behind a `sh` wrapper) dies with it, when the
/// program is stopped and when it is dropped (the run ended or was cut short).
struct Group(Option<u32>);

impl Group {
    fn kill(&self) {
        #[cfg(unix)]
        {
            use rustix::process::{kill_process_group, Pid, Signal};
            // Never 1: kill(-1) would signal every process we may.
            let leader = self.0.filter(|pid| *pid > 1);
            if let Some(pid) = leader.and_then(|pid| Pid::from_raw(pid as i32)) {
                let _ = kill_process_group(pid, Signal::KILL);
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running copy of the program.
struct Running {
    child: Child,
    group: Group,
    stdin: mpsc::UnboundedSender<Vec<u8>>,
    stdout: ReplyLines,
    /// Read in the worker's loop after stdout: a line read once the oldest
    /// request's reply was read is counted as the next request's. Which of
    /// two pipes a program wrote first cannot be known, so a program far
    /// ahead of the worker may show a sample the last lines of the one
    /// before; it never hides a sample's own.
    stderr: Option<Lines<BufReader<ChildStderr>>>,
    tail: Tail,
}

impl Running {
    /// Stops the program (killed if `kill`, else given a moment to exit after
    /// stdin closes) and returns how it ended and its stderr from line `from`.
    async fn stop(mut self, kill: bool, from: u64) -> (Option<ExitStatus>, String) {
        drop(self.stdin);
        if kill {
            // The whole group while its leader is not yet reaped (its id
            // cannot be taken by another process meanwhile).
            self.group.kill();
            let _ = self.child.start_kill();
        }
        let status = match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        };
        // What it started and left running goes with it (a group keeps its
        // id while it has members); once, not again on drop.
        self.group.kill();
        self.group.0 = None;
        // What it wrote last; stderr closes when the program exits (unless
        // a child of its own holds it).
        if let Some(stderr) = &mut self.stderr {
            let drain = async {
                while let Ok(Some(line)) = stderr.next_line().await {
                    self.tail.push(line);
                }
            };
            let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
        }
        let tail = self.tail.text(from);
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
    /// When the oldest pending request became the oldest, and the stderr
    /// lines written before then (another sample's).
    head_since: Instant,
    head_stderr: u64,
    /// A reply to an id that was not pending, said with the next failure
    /// (it belongs to no sample, so it fails none).
    stray: Option<u64>,
}

/// The next line of a program's stderr; `None` once it is closed.
async fn next_line(stderr: &mut Option<Lines<BufReader<ChildStderr>>>) -> Option<String> {
    stderr.as_mut()?.next_line().await.ok().flatten()
}

/// What the worker waits for next.
enum Event {
    Stderr(Option<String>),
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
            head_stderr: 0,
            stray: None,
        }
    }

    /// The oldest pending request became the oldest now.
    fn new_head(&mut self) {
        self.head_since = Instant::now();
        self.head_stderr = self.running.as_ref().map_or(0, |r| r.tail.written);
    }

    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        loop {
            if self.running.is_none() && !self.pending.is_empty() {
                self.restart();
            }
            let deadline = self.head_since + self.launch.timeout;
            let event = match &mut self.running {
                // Replies before stderr (see `Running::stderr`).
                Some(running) => tokio::select! {
                    biased;
                    line = running.stdout.next() => Event::Line(line),
                    line = next_line(&mut running.stderr), if running.stderr.is_some() => Event::Stderr(line),
                    r = requests.recv() => Event::Request(r),
                    _ = tokio::time::sleep_until(deadline), if !self.pending.is_empty() => Event::Timeout,
                },
                None => Event::Request(requests.recv().await),
            };
            match event {
                Event::Stderr(line) => {
                    if let Some(running) = &mut self.running {
                        match line {
                            Some(line) => running.tail.push(line),
                            None => running.stderr = None,
                        }
                    }
                }
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
            running.stop(false, 0).await;
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
                self.new_head();
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
        // A group of its own: killed whole, and the terminal's Ctrl-C goes
        // to dotevals alone, which stops it when the run ends.
        #[cfg(unix)]
        command.process_group(0);
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
        Ok(Running {
            group: Group(child.id()),
            child,
            stdin: tx,
            stdout: ReplyLines {
                reader: BufReader::new(stdout),
                buf: Vec::new(),
            },
            stderr: Some(BufReader::new(stderr).lines()),
            tail: Tail::default(),
        })
    }

    fn send(&mut self, request: Request) {
        // Without a program the loop starts one and sends every pending request.
        if self.running.is_some() && self.pending.is_empty() {
            self.new_head();
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
            self.stray = Some(id);
            return;
        };
        if oldest == Some(id) {
            self.new_head();
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
        let (status, tail) = running.stop(kill, self.head_stderr).await;
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
            message.push_str(&format!("; its stderr meanwhile: {tail}"));
        }
        if let Some(id) = self.stray.take() {
            message.push_str(&format!(
                "; earlier it replied to id {id}, which it was not asked (or had answered)"
            ));
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
        assert!(t.text(0).ends_with("line 99"));
        assert_eq!(t.text(99), "line 99", "only the lines from 99 on");
        t.push("x".repeat(5000));
        assert!(t.text(0).len() <= TAIL_BYTES + 3);
    }
}
