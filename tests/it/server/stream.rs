//! Streamed replies: the events of a reply scheduled over time (with the
//! reply's fault at the end, if it has one), sent as a chunked HTTP/1.1 body,
//! each batch of frames due at once in one flushed write.
//!
//! The raw server writes a [`Script`] onto its client's socket itself
//! ([`write_script`]). axum is given it as a stream of those batches
//! ([`paced`]), each yielded when it is due; hyper sends each as a chunk as
//! it comes.

use std::io;
use std::iter::Peekable;
use std::time::Duration;

use axum::body::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};

use super::apis::{events, Api};
use super::replies::Reply;
use super::shared::{Answer, Shared};

/// How long after its last frames a stream is reset: the time to send them
/// and for the client to read them.
const RESET_GRACE: Duration = Duration::from_millis(20);

/// How a stream ends after its last frame.
enum End {
    /// The last chunk: the body is whole (even if the events are not).
    Clean,
    /// The connection is dropped.
    Reset,
    /// Nothing more, until the client hangs up.
    Stall,
}

/// The frames of a streamed reply, each with when it is due from the
/// headers, and how and when the body ends.
pub(super) struct Script {
    steps: Vec<(Duration, String)>,
    end: End,
    end_at: Duration,
}

impl Script {
    /// The script of `answer`'s reply, if its request asked for a stream and
    /// the reply is a text or a stream fault.
    pub(super) fn of(shared: &Shared, answer: &Answer) -> Option<Script> {
        let received = &answer.received;
        if !received.streamed() {
            return None;
        }
        let api = Api::of_path(&received.path)?;
        // The pieces sent before a fault, and the fault.
        let (content, fault) = match &answer.reply {
            Reply::Text(content) => (content, None),
            Reply::StreamCut {
                content,
                pieces,
                reset,
            } => {
                let end = if *reset { End::Reset } else { End::Clean };
                (content, Some((*pieces, end, None)))
            }
            Reply::StreamError {
                content,
                pieces,
                kind,
            } => (content, Some((*pieces, End::Clean, Some(kind.as_str())))),
            Reply::StreamStall { content, pieces } => (content, Some((*pieces, End::Stall, None))),
            _ => return None,
        };
        let events = events(api, received, content, shared.tokens);
        let n = events.pieces.len();
        let (first, total) = shared.stream_timing.unwrap_or_default();
        let total = total.max(first);
        // Piece i is due at `first` plus its share of the rest, so the gaps
        // between the pieces and the end are even and the end is at `total`.
        let at = |i: usize| {
            if i >= n {
                total
            } else {
                first + (total - first) * i as u32 / n as u32
            }
        };
        let mut steps: Vec<(Duration, String)> = events
            .control
            .iter()
            .map(|f| (Duration::ZERO, f.clone()))
            .collect();
        let sent = fault.as_ref().map_or(n, |(k, ..)| (*k).min(n));
        steps.extend((0..sent).map(|i| (at(i), events.pieces[i].clone())));
        let end = match fault {
            None => {
                steps.extend(events.tail.iter().map(|f| (total, f.clone())));
                End::Clean
            }
            Some((_, end, error)) => {
                if let Some(kind) = error {
                    steps.push((at(sent), events.error(kind, sent)));
                }
                end
            }
        };
        Some(Script {
            steps,
            end,
            end_at: at(sent),
        })
    }
}

const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
    cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";

/// Writes what is pending, if anything, and flushes it.
async fn send(stream: &mut TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        stream.flush().await?;
        out.clear();
    }
    Ok(())
}

/// Waits until `at`; at once when it has passed (a timer rounds up to the
/// next millisecond: an unpaced stream would take one longer than a whole
/// reply).
async fn due(at: Instant) {
    if at > Instant::now() {
        sleep_until(at).await;
    }
}

/// Sends what is pending if `due` is still to come, then waits for it.
async fn wait_for(stream: &mut TcpStream, out: &mut Vec<u8>, due: Instant) -> io::Result<()> {
    if due > Instant::now() {
        send(stream, out).await?;
        tokio::time::sleep_until(due).await;
    }
    Ok(())
}

/// Writes `script` onto `stream` as a whole response (headers included).
/// True if the body ended cleanly (the connection can serve another
/// request), false if it was dropped or the client hung up on a stall. `whole` is called just before the clean end
/// is written, so the answer is on record before the client can see it.
pub(super) async fn write_script(
    stream: &mut TcpStream,
    script: Script,
    whole: impl FnOnce(),
) -> io::Result<bool> {
    let start = Instant::now();
    let mut out = SSE_HEAD.as_bytes().to_vec();
    for (at, frame) in script.steps {
        wait_for(stream, &mut out, start + at).await?;
        out.extend_from_slice(format!("{:x}\r\n", frame.len()).as_bytes());
        out.extend_from_slice(frame.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match script.end {
        End::Clean => {
            wait_for(stream, &mut out, start + script.end_at).await?;
            out.extend_from_slice(b"0\r\n\r\n");
            whole();
            send(stream, &mut out).await?;
            Ok(true)
        }
        End::Reset => {
            wait_for(stream, &mut out, start + script.end_at).await?;
            send(stream, &mut out).await?;
            // Give the client time to read what was sent, then reset.
            tokio::time::sleep(RESET_GRACE).await;
            stream.set_zero_linger()?;
            Ok(false)
        }
        End::Stall => {
            send(stream, &mut out).await?;
            // Until the client gives up: a read of 0 bytes (or an error) is its close.
            let mut sink = [0u8; 1024];
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
            Ok(false)
        }
    }
}

/// For axum: `script` as a body stream, each batch of frames due at once
/// yielded at its time. A clean end calls `whole` just before the batch it
/// ends with (or, if it comes later, before the stream ends), so the answer
/// is on record before the client can see it; a reset ends the stream with
/// an error (hyper then drops the connection without the last chunk); a
/// stall stays pending until the client hangs up and the body is dropped.
/// `whole` is kept (and whatever it owns) until it is called or the stream
/// is dropped.
pub(super) fn paced<F>(script: Script, whole: F) -> impl Stream<Item = io::Result<Bytes>>
where
    F: FnOnce() + Send + 'static,
{
    let pacer = Pacer {
        start: Instant::now(),
        steps: script.steps.into_iter().peekable(),
        end: script.end,
        end_at: script.end_at,
        whole: Some(whole),
        over: false,
    };
    futures_util::stream::unfold(pacer, |mut pacer| async move {
        let item = pacer.next().await?;
        Some((item, pacer))
    })
}

/// What is left of a script being streamed.
struct Pacer<F> {
    start: Instant,
    steps: Peekable<std::vec::IntoIter<(Duration, String)>>,
    end: End,
    end_at: Duration,
    whole: Option<F>,
    /// The body has ended cleanly.
    over: bool,
}

impl<F: FnOnce()> Pacer<F> {
    /// The next batch of frames, once it is due; `None` at the clean end.
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        if self.over {
            return None;
        }
        let start = self.start;
        if let Some(&(at, _)) = self.steps.peek() {
            due(start + at).await;
            let now = Instant::now();
            let mut batch = String::new();
            while let Some((_, frame)) = self.steps.next_if(|(at, _)| start + *at <= now) {
                batch.push_str(&frame);
            }
            if self.steps.peek().is_none()
                && matches!(self.end, End::Clean)
                && start + self.end_at <= now
            {
                self.finish();
            }
            return Some(Ok(Bytes::from(batch)));
        }
        match self.end {
            End::Clean => {
                due(start + self.end_at).await;
                self.finish();
                None
            }
            End::Reset => {
                due(start + self.end_at).await;
                // As the raw server does: time to send what was yielded
                // (hyper drops what it still holds on an error) and for the
                // client to read it.
                tokio::time::sleep(RESET_GRACE).await;
                Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "the test server resets the stream",
                )))
            }
            End::Stall => std::future::pending().await,
        }
    }

    /// Records the clean end; the stream ends after what it has yielded.
    fn finish(&mut self) {
        if let Some(whole) = self.whole.take() {
            whole();
        }
        self.over = true;
    }
}
