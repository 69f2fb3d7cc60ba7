//! The raw HTTP/1.1 server: just enough HTTP for a client like reqwest
//! (Content-Length request bodies, keep-alive), and full control of the bytes
//! and the socket on the way back, for replies that break HTTP itself.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::apis::{whole_body, Api};
use super::replies::{huge_block, Reply};
use super::shared::{answer, Answer, Shared};
use super::stream::{write_script, Script};

pub(super) async fn serve_raw(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _ = raw_connection(stream, shared).await;
        });
    }
}

/// One parsed request.
struct RawRequest {
    method: String,
    /// The target's path, without its query.
    path: String,
    /// Every header, its name lowercased.
    headers: Vec<(String, String)>,
    close: bool,
    body: Vec<u8>,
}

/// Reads one request from `stream`; `None` when the client closed the connection.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<RawRequest>> {
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > 1 << 20 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "header too large",
            ));
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let (mut length, mut headers, mut close) = (0usize, Vec::new(), false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => length = value.parse().unwrap_or(0),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
        headers.push((name, value.to_owned()));
    }
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Ok(Some(RawRequest {
        method,
        path,
        headers,
        close,
        body,
    }))
}

fn status_line(code: u16) -> String {
    let reason = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    format!("HTTP/1.1 {code} {reason}\r\n")
}

/// A response head with these extra headers (a 429's wait, for one).
fn head(code: u16, length: Option<usize>, headers: &[(&str, &str)]) -> String {
    let mut h = status_line(code);
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        h.push_str("content-type: application/json\r\n");
    }
    match length {
        Some(n) => h.push_str(&format!("content-length: {n}\r\n")),
        None => h.push_str("transfer-encoding: chunked\r\n"),
    }
    for (name, value) in headers {
        h.push_str(&format!("{name}: {value}\r\n"));
    }
    h.push_str("\r\n");
    h
}

async fn write_whole(
    stream: &mut TcpStream,
    code: u16,
    body: &[u8],
    headers: &[(&str, &str)],
) -> io::Result<()> {
    let mut out = head(code, Some(body.len()), headers).into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out).await?;
    stream.flush().await
}

async fn raw_connection(mut stream: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buf).await? {
        let keep_open = match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/stats") => {
                write_whole(&mut stream, 200, shared.stats_json().as_bytes(), &[]).await?;
                true
            }
            ("POST", path) if Api::of_path(path).is_some() => {
                let answer = answer(&shared, path, request.headers, &request.body).await;
                raw_reply(&mut stream, &shared, answer).await?
            }
            _ => {
                write_whole(&mut stream, 404, b"{\"error\": \"not found\"}", &[]).await?;
                true
            }
        };
        if !keep_open || request.close {
            break;
        }
    }
    Ok(())
}

/// Writes `answer`; false when the connection must not be reused.
async fn raw_reply(stream: &mut TcpStream, shared: &Shared, answer: Answer) -> io::Result<bool> {
    let prompt = answer.received.prompt.clone();
    if let Some(script) = Script::of(shared, &answer) {
        let whole = || shared.answered(prompt, answer.start, 200);
        return write_script(stream, script, whole).await;
    }
    let api = answer.api();
    let body_of = |content: &str| whole_body(api, &answer.received, content, shared.tokens);
    match answer.reply {
        Reply::Text(ref content) => {
            let body = body_of(content);
            write_whole(stream, 200, body.as_bytes(), &[]).await?;
            shared.answered(prompt, answer.start, 200);
            Ok(true)
        }
        Reply::Status {
            code,
            ref body,
            ref retry_after,
        } => {
            let header = shared.retry_header_of(answer.gated);
            let retry: Vec<_> = retry_after.iter().map(|a| (header, a.as_str())).collect();
            write_whole(stream, code, body.as_bytes(), &retry).await?;
            shared.answered(prompt, answer.start, code);
            Ok(true)
        }
        Reply::StatusWithHeaders {
            code,
            ref body,
            ref headers,
        } => {
            let headers: Vec<_> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            write_whole(stream, code, body.as_bytes(), &headers).await?;
            shared.answered(prompt, answer.start, code);
            Ok(true)
        }
        Reply::Raw(ref body) => {
            write_whole(stream, 200, body.as_bytes(), &[]).await?;
            shared.answered(prompt, answer.start, 200);
            Ok(true)
        }
        Reply::RawEvents(ref body) => {
            let events = [("content-type", "text/event-stream")];
            write_whole(stream, 200, body.as_bytes(), &events).await?;
            shared.answered(prompt, answer.start, 200);
            Ok(true)
        }
        Reply::Hang => {
            // Until the client gives up: a read of 0 bytes (or an error) is its close.
            let mut sink = [0u8; 1024];
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
            Ok(false)
        }
        Reply::ResetMidBody(ref content) => {
            let body = body_of(content);
            let mut out = head(200, Some(body.len()), &[]).into_bytes();
            out.extend_from_slice(&body.as_bytes()[..body.len() / 2]);
            stream.write_all(&out).await?;
            stream.flush().await?;
            // Give the client time to read the headers, then reset the connection.
            tokio::time::sleep(Duration::from_millis(20)).await;
            stream.set_zero_linger()?;
            Ok(false)
        }
        Reply::Trickle {
            ref content,
            interval,
        } => {
            let body = body_of(content);
            stream
                .write_all(head(200, Some(body.len()), &[]).as_bytes())
                .await?;
            for byte in body.as_bytes() {
                stream.write_all(&[*byte]).await?;
                stream.flush().await?;
                tokio::time::sleep(interval).await;
            }
            shared.answered(prompt, answer.start, 200);
            Ok(true)
        }
        Reply::Huge { bytes, chunked } => {
            const BLOCK: usize = 64 * 1024;
            let length = (!chunked).then_some(bytes);
            stream.write_all(head(200, length, &[]).as_bytes()).await?;
            let filler = huge_block(1, BLOCK);
            let mut sent = 0;
            while sent < bytes {
                let n = BLOCK.min(bytes - sent);
                let first;
                let data: &[u8] = if sent == 0 {
                    first = huge_block(0, n);
                    &first
                } else {
                    &filler[..n]
                };
                if chunked {
                    let mut framed = format!("{n:x}\r\n").into_bytes();
                    framed.extend_from_slice(data);
                    framed.extend_from_slice(b"\r\n");
                    stream.write_all(&framed).await?;
                } else {
                    stream.write_all(data).await?;
                }
                sent += n;
            }
            if chunked {
                stream.write_all(b"0\r\n\r\n").await?;
            }
            stream.flush().await?;
            Ok(false)
        }
        Reply::Delayed(..) => unreachable!("delays are unwrapped in `answer`"),
        Reply::StreamCut { .. } | Reply::StreamError { .. } | Reply::StreamStall { .. } => {
            unreachable!("a stream fault is a stream, or a text if no stream was asked")
        }
    }
}
