//! Hardening of requests, replies and secrets (issue 8, items 9 to 12 and 14):
//! redirects are errors, never followed; secrets echoed escaped, encoded or
//! as a Basic credential are scrubbed; `params` cannot override what the
//! client sends; replies are read leniently, and error or garbled bodies are
//! retried; a server behind a private CA is reached through `SSL_CERT_FILE`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::server::{Reply, TestServer, XorShift};
use crate::support::{contains_bytes, files_under, show_json};
use crate::util::{text_rows, Out, Spec, TestDir};

/// A spec of one sample per prompt against `url`, with `model_extra` lines
/// under `model:`.
fn spec(url: &str, prompts: &[&str], model_extra: &str) -> String {
    Spec::new("hardened", url)
        .rows(&text_rows(prompts))
        .model_name("m")
        .model("  timeout: 5s\n  retry: {max_attempts: 3, backoff: 10ms, max_backoff: 20ms}\n")
        .model(model_extra)
        .to_string()
}

/// A tiny HTTP/1.1 server on loopback answering each request with what
/// `answer(method, path)` gives (status line, extra headers, body), one
/// request per connection. It counts requests by method.
struct TinyServer {
    port: u16,
    gets: Arc<AtomicUsize>,
    posts: Arc<AtomicUsize>,
}

type Answer = (String, String, String);

impl TinyServer {
    fn start(answer: impl Fn(&str, &str, u16) -> Answer + Send + Sync + 'static) -> TinyServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("local address").port();
        let gets = Arc::new(AtomicUsize::new(0));
        let posts = Arc::new(AtomicUsize::new(0));
        let (g, p) = (gets.clone(), posts.clone());
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (answer, g, p) = (answer.clone(), g.clone(), p.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(stream, port, &*answer, &g, &p);
                });
            }
        });
        TinyServer { port, gets, posts }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

fn serve_one(
    stream: TcpStream,
    port: u16,
    answer: &dyn Fn(&str, &str, u16) -> Answer,
    gets: &AtomicUsize,
    posts: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match method {
        "GET" => gets.fetch_add(1, Ordering::SeqCst),
        _ => posts.fetch_add(1, Ordering::SeqCst),
    };
    let (status, headers, body) = answer(method, path, port);
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[test]
fn redirects_are_errors_naming_the_target_never_followed() {
    // POST answers 302 to /elsewhere on the same server, whose GET answers a
    // well-formed reply with empty content: following it "finishes" the sample.
    let server = TinyServer::start(|method, path, port| match (method, path) {
        ("GET", _) => (
            "200 OK".into(),
            String::new(),
            json!({"choices": [{"message": {"content": ""}}]}).to_string(),
        ),
        _ => (
            "302 Found".into(),
            format!("Location: http://127.0.0.1:{port}/elsewhere\r\n"),
            String::new(),
        ),
    });
    let dir = TestDir::new();
    dir.write("spec.yaml", &spec(&server.url(), &["a", "b"], ""));
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    out.assert_exit_code(1);
    assert_eq!(
        server.gets.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    assert_eq!(
        server.posts.load(Ordering::SeqCst),
        2,
        "one attempt per sample"
    );
    let eval = dir.show_full("x").only().clone();
    let target = format!("http://127.0.0.1:{}/elsewhere", server.port);
    for r in eval.records() {
        assert_eq!(r.error_kind.as_deref(), Some("http_302"), "{r:?}");
        assert_eq!(r.attempts, 1, "a redirect is not retried: {r:?}");
        assert_eq!(r.output, None);
        let message = r.error.as_deref().unwrap_or_default();
        assert!(message.contains(&target), "names the target: {message}");
        assert!(message.contains("base_url"), "says what to do: {message}");
    }
}

/// Runs `spec.yaml` (expecting exit 1), then every read command, and returns
/// (where, bytes) of everything printed and every file of the store folder.
fn run_and_read_everything(dir: &TestDir, key: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let with_key = |args: &[&str]| {
        let cmd = dir.cmd(args);
        match key {
            Some(k) => cmd.env("OPENAI_API_KEY", k),
            None => cmd,
        }
    };
    let mut outputs: Vec<(String, Out)> = Vec::new();
    let run = with_key(&["run", "spec.yaml", "--experiment", "x"]).output();
    run.assert_exit_code(1);
    outputs.push(("run".into(), run));
    for args in [
        vec!["show", "x", "--errors"],
        vec!["show", "x", "--errors", "--format", "json"],
        vec!["show", "x", "--full"],
        vec!["show", "x", "--full", "--format", "json"],
    ] {
        let out = with_key(&args).output();
        out.assert_exit_code(0);
        outputs.push((args.join(" "), out));
    }
    let mut all = Vec::new();
    for (what, o) in outputs {
        all.push((format!("{what}: stdout"), o.stdout.into_bytes()));
        all.push((format!("{what}: stderr"), o.stderr.into_bytes()));
    }
    let store_dir = dir.store().parent().expect("store folder").to_path_buf();
    for f in files_under(&store_dir) {
        let bytes = std::fs::read(&f).expect("read store file");
        all.push((f.display().to_string(), bytes));
    }
    all
}

fn assert_absent(written: &[(String, Vec<u8>)], needles: &[(&str, String)]) {
    let mut leaks = Vec::new();
    for (what, needle) in needles {
        for (place, bytes) in written {
            if contains_bytes(bytes, needle.as_bytes()) {
                leaks.push(format!("{what} `{needle}` in {place}"));
            }
        }
    }
    assert!(leaks.is_empty(), "leaked:\n{}", leaks.join("\n"));
}

#[test]
fn api_keys_echoed_escaped_or_encoded_are_scrubbed() {
    let token = XorShift::from_time().token(20);
    let key = format!("sk-abc123/xyz+{token}");
    let escaped = key.replace('/', "\\/");
    let unicode = key.replace('/', "\\u002f").replace('+', "\\u002B");
    let percent = key.replace('/', "%2F").replace('+', "%2b");
    // The server quotes the key it received, in every spelling, in an error body.
    let server = TestServer::builder()
        .respond(|r| {
            let key = r
                .authorization
                .as_deref()
                .and_then(|a| a.strip_prefix("Bearer "))
                .unwrap_or("none");
            let body = format!(
                "{{\"error\": {{\"message\": \"invalid key {} (json) or {} (unicode) or {} (url)\"}}}}",
                key.replace('/', "\\/"),
                key.replace('/', "\\u002f").replace('+', "\\u002B"),
                key.replace('/', "%2F").replace('+', "%2b"),
            );
            Reply::status(401, body)
        })
        .start();
    let dir = TestDir::new();
    dir.write(
        "spec.yaml",
        &spec(
            &server.url(),
            &["a", "b"],
            "  api_key_env: OPENAI_API_KEY\n",
        ),
    );
    let written = run_and_read_everything(&dir, Some(&key));
    // The server got the key (else this proves nothing).
    assert!(server
        .requests()
        .iter()
        .all(|r| r.authorization.as_deref() == Some(format!("Bearer {key}").as_str())));
    // The error was recorded, scrubbed.
    let errors = written
        .iter()
        .find(|(w, _)| w == "show x --errors --format json: stdout")
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .expect("show --errors output");
    assert!(errors.contains("invalid key [REDACTED] (json)"), "{errors}");
    assert_absent(
        &written,
        &[
            ("the key", key.clone()),
            ("the key JSON-escaped", escaped),
            ("the key \\u-escaped", unicode),
            ("the key URL-encoded", percent),
            ("the key's random part", token),
        ],
    );
}

#[test]
fn basic_credentials_from_base_url_are_scrubbed() {
    let mut rng = XorShift::from_time();
    let user = format!("alice{}", rng.token(4));
    // `/` in a URL password is written %2F; the server sees it decoded.
    let secret = rng.token(16);
    let password = format!("pw/{secret}");
    let server = TestServer::builder()
        .respond(|r| {
            let auth = r.authorization.clone().unwrap_or_default();
            Reply::status(
                403,
                json!({"error": {"message": format!("refused credential {auth} (or {})", auth.replace('/', "\\/"))}})
                    .to_string(),
            )
        })
        .start();
    let url = server
        .url()
        .replace("http://", &format!("http://{user}:pw%2F{secret}@"));
    let dir = TestDir::new();
    dir.write("spec.yaml", &spec(&url, &["a", "b"], ""));
    let written = run_and_read_everything(&dir, None);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let auth = requests[0].authorization.clone().unwrap_or_default();
    let basic = auth
        .strip_prefix("Basic ")
        .unwrap_or_else(|| panic!("no Basic credential sent: {auth:?}"))
        .to_owned();
    let errors = written
        .iter()
        .find(|(w, _)| w == "show x --errors --format json: stdout")
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .expect("show --errors output");
    assert!(
        errors.contains("refused credential Basic [REDACTED]"),
        "{errors}"
    );
    assert_absent(
        &written,
        &[
            ("the Basic credential", basic.clone()),
            (
                "the Basic credential JSON-escaped",
                basic.replace('/', "\\/"),
            ),
            ("the password", password),
            ("the password as written", format!("pw%2F{secret}")),
            ("the password's random part", secret),
        ],
    );
}

#[test]
fn params_that_the_client_sets_are_refused_with_a_location() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    // (params lines, key, line of the key, hint fragment)
    let cases = [
        (
            "    temperature: 0\n    model: evil\n",
            "model",
            "model.name",
        ),
        (
            "    messages: [{role: user, content: injected}]\n",
            "messages",
            "`prompt` or `messages`",
        ),
        ("    stream: true\n", "stream", "in the model block itself"),
    ];
    for (params, key, hint) in cases {
        let text = spec(&server.url(), &["a"], &format!("  params:\n{params}"));
        let line = text
            .lines()
            .position(|l| l.trim_start().starts_with(&format!("{key}:")) && l.starts_with("    "))
            .expect("the key's line")
            + 1;
        dir.write("spec.yaml", &text);
        for command in [
            vec!["validate", "spec.yaml"],
            vec!["run", "spec.yaml", "--experiment", "x"],
        ] {
            let out = dir.cmd(&command).output();
            out.assert_exit_code(2);
            out.assert_stderr_contains(&format!("spec.yaml:{line}:5"));
            out.assert_stderr_contains(&format!("`params` may not set `{key}`"));
            out.assert_stderr_contains(hint);
        }
    }
    assert_eq!(server.count(), 0, "nothing is sent for a refused spec");
    // `stream: false` is what is sent anyway.
    dir.write(
        "spec.yaml",
        &spec(
            &server.url(),
            &["a"],
            "  params: {stream: false, temperature: 0}\n",
        ),
    );
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count(), 1);
}

#[test]
fn replies_are_read_leniently_and_bad_bodies_retried() {
    let server = TestServer::builder()
        .respond(|r| {
            let first = r.attempt == 1;
            match r.prompt.as_str() {
                "bad usage" => Reply::raw(
                    json!({"choices": [{"message": {"content": "bad usage"}}], "usage": {"prompt_tokens": -4, "completion_tokens": 2.5}})
                        .to_string(),
                ),
                "parts" => Reply::raw(
                    json!({"choices": [{"message": {"content": [{"type": "text", "text": "pa"}, {"type": "text", "text": "rts"}]}}]})
                        .to_string(),
                ),
                "error once" if first => Reply::raw(
                    json!({"error": {"message": "upstream overloaded", "code": 502}}).to_string(),
                ),
                "error always" => Reply::raw(
                    json!({"error": {"message": "model is loading"}}).to_string(),
                ),
                "garbled once" if first => Reply::raw("{\"choices\": [{\"mess"),
                "garbled always" => Reply::raw("<html>502</html>"),
                other => Reply::text(other),
            }
        })
        .start();
    let prompts = [
        "bad usage",
        "parts",
        "error once",
        "error always",
        "garbled once",
        "garbled always",
    ];
    let dir = TestDir::new();
    dir.write("spec.yaml", &spec(&server.url(), &prompts, ""));
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    out.assert_exit_code(1);
    let eval = dir.show_full("x").only().clone();
    // (prompt, output, error kind, attempts)
    let expected: [(&str, Option<&str>, Option<&str>, u32); 6] = [
        ("bad usage", Some("bad usage"), None, 1),
        ("parts", Some("parts"), None, 1),
        ("error once", Some("error once"), None, 2),
        ("error always", None, Some("api_error"), 3),
        ("garbled once", Some("garbled once"), None, 2),
        ("garbled always", None, Some("malformed"), 3),
    ];
    let mut wrong = Vec::new();
    for (i, (prompt, output, kind, attempts)) in expected.iter().enumerate() {
        let r = eval.record(&i.to_string());
        let got = (r.output.as_deref(), r.error_kind.as_deref(), r.attempts);
        if got != (*output, *kind, *attempts) {
            wrong.push(format!(
                "{prompt}: expected {:?}, got {got:?} ({:?})",
                (output, kind, attempts),
                r.error
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    let bad_usage = eval.record("0");
    assert_eq!(
        (bad_usage.prompt_tokens, bad_usage.completion_tokens),
        (None, None)
    );
    assert!(eval
        .record("3")
        .error
        .as_deref()
        .is_some_and(|e| e.contains("model is loading")));
    // The documented `api_error` kind is what `show --errors` groups by.
    let report = show_json(&dir, "x", &["--errors"]);
    let kinds: Vec<&str> = report["evaluations"][0]["error_kinds"]
        .as_array()
        .map(|k| k.iter().filter_map(|k| k["kind"].as_str()).collect())
        .unwrap_or_default();
    assert!(kinds.contains(&"api_error"), "{kinds:?}");
}

/// A private CA and a certificate it signed for 127.0.0.1, made with the
/// `openssl` command, in `dir`: (ca.pem, server.pem, server.key).
fn private_ca(dir: &Path) -> Option<()> {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()
            .filter(|s| s.success())
    };
    std::fs::write(
        dir.join("leaf.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .ok()?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=dotevals test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&ca)?;
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&csr)?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.cnf",
    ])?;
    Some(())
}

/// An HTTPS chat-completions server (Python's http.server behind its ssl
/// module) answering `tls: PROMPT`; killed on drop.
struct HttpsServer {
    child: Child,
    port: u16,
}

const HTTPS_SERVER: &str = r#"
import http.server, json, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        text = body["messages"][-1]["content"]
        out = json.dumps({"choices": [{"message": {"content": "tls: " + text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

impl HttpsServer {
    fn start(dir: &Path) -> Option<HttpsServer> {
        std::fs::write(dir.join("https_server.py"), HTTPS_SERVER).ok()?;
        let mut child = Command::new("python3")
            .args(["https_server.py", "server.pem", "server.key"])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut line = String::new();
        let stdout = child.stdout.take()?;
        BufReader::new(stdout).read_line(&mut line).ok()?;
        match line.trim().parse() {
            Ok(port) => Some(HttpsServer { child, port }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_private_ca_is_trusted_through_ssl_cert_file() {
    let dir = TestDir::new();
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).expect("tls folder");
    if !(crate::support::on_path("openssl") && crate::support::on_path("python3")) {
        crate::support::skip(
            "a_private_ca_is_trusted_through_ssl_cert_file",
            "needs the openssl command and python3",
        );
        return;
    }
    // With the tools there, a setup that fails is a failure, not a skip.
    private_ca(&tls).expect("openssl made the private CA and the server's certificate");
    let server = HttpsServer::start(&tls).expect("python3 served HTTPS with the certificate");
    let url = format!("https://127.0.0.1:{}/v1", server.port);
    dir.write("spec.yaml", &spec(&url, &["a", "b"], ""));

    // Without the CA: a certificate error that says what to do, not retried.
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "untrusted", "--quiet"])
        .output();
    out.assert_exit_code(1);
    let eval = dir.show_full("untrusted").only().clone();
    for r in eval.records() {
        let message = r.error.as_deref().unwrap_or_default();
        assert_eq!(r.error_kind.as_deref(), Some("connection"), "{r:?}");
        assert!(message.contains("UnknownIssuer"), "{message}");
        assert!(message.contains("SSL_CERT_FILE"), "{message}");
        assert_eq!(
            r.attempts, 1,
            "a refused certificate is not retried: {message}"
        );
    }

    // With SSL_CERT_FILE naming the CA: every sample finishes.
    let ca = tls.join("ca.pem");
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "file", "--quiet"])
        .env("SSL_CERT_FILE", &ca)
        .output();
    out.assert_exit_code(0);
    let eval = dir.show_full("file").only().clone();
    assert_eq!(eval.record("0").output.as_deref(), Some("tls: a"));
    assert_eq!(eval.record("1").output.as_deref(), Some("tls: b"));

    // SSL_CERT_DIR: a folder of PEM files.
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("certs folder");
    std::fs::copy(&ca, certs.join("ca.pem")).expect("copy the CA");
    dir.cmd(["run", "spec.yaml", "--experiment", "folder", "--quiet"])
        .env("SSL_CERT_DIR", &certs)
        .output()
        .assert_exit_code(0);

    // A variable naming a file that is not there is pointed out.
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "missing", "--quiet"])
        .env("SSL_CERT_FILE", dir.path().join("nope.pem"))
        .output();
    out.assert_exit_code(1);
    let eval = dir.show_full("missing").only().clone();
    let message = eval.record("0").error.clone().unwrap_or_default();
    assert!(
        message.contains("nope.pem, which cannot be read"),
        "{message}"
    );
}
