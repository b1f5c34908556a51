//! The standalone server over TLS (`harness-hyper` with `SSEIO_TLS_CERT` and `SSEIO_TLS_KEY`),
//! driven by curl as a client would: HTTP/2 negotiated by ALPN, HTTP/1.1 on the lean path, the
//! graceful drain of both, and bad TLS material refused at startup with the file named.
//!
//! The certificates are made here with rcgen, for `localhost` and `127.0.0.1`, and written under
//! Cargo's temporary directory for tests; curl runs with `-k`. curl must be on `PATH` (Debian's
//! `curl`, built with nghttp2; `./scripts/test-all` installs it). Every wait has a deadline.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use conformance_tests::Harness;
use conformance_tests::control::LogRecord;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The harness binary under test.
const HARNESS: &str = env!("CARGO_BIN_EXE_harness-hyper");

/// How long any single expected thing (a line of output, an exit) may take.
const WAIT: Duration = Duration::from_secs(15);

/// A certificate for `localhost` and `127.0.0.1` and its key, as PEM files.
struct Certs {
    cert: PathBuf,
    key: PathBuf,
}

/// Makes a self-signed certificate and its key, written into a directory named `name` of its
/// own.
fn certs(name: &str) -> Certs {
    let dir = scratch(name);
    let certified =
        rcgen::generate_simple_self_signed(["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("rcgen makes a certificate");
    let certs = Certs {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&certs.cert, certified.cert.pem()).expect("write the certificate");
    std::fs::write(&certs.key, certified.signing_key.serialize_pem()).expect("write the key");
    certs
}

/// An empty directory for one test, under Cargo's temporary directory for tests.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("tls")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// Starts the harness serving TLS with `certs` (and `env`); its base URL, `https://...`.
async fn start_tls(certs: &Certs, env: &[(&str, &str)]) -> (Harness, String) {
    let (cert, key) = (path_str(&certs.cert), path_str(&certs.key));
    let mut vars = vec![("SSEIO_TLS_CERT", cert), ("SSEIO_TLS_KEY", key)];
    vars.extend_from_slice(env);
    let harness = Harness::start("hyper", HARNESS, &vars).await;
    let base = harness.base_url().replacen("http://", "https://", 1);
    (harness, base)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Which HTTP version curl is told to use.
#[derive(Clone, Copy, Debug)]
enum Http {
    /// `--http2`: offer `h2` then `http/1.1` by ALPN.
    Two,
    /// `--http1.1`: offer only `http/1.1`.
    OneOne,
}

impl Http {
    fn flag(self) -> &'static str {
        match self {
            Http::Two => "--http2",
            Http::OneOne => "--http1.1",
        }
    }

    /// The status line curl prints for a `200` in this version (with `-i`).
    fn status_line(self) -> &'static str {
        match self {
            Http::Two => "HTTP/2 200",
            Http::OneOne => "HTTP/1.1 200 OK",
        }
    }

    /// What curl's `%{http_version}` says for this version.
    fn write_out(self) -> &'static str {
        match self {
            Http::Two => "2",
            Http::OneOne => "1.1",
        }
    }
}

/// A curl process streaming one SSE response, read line by line (headers included, `-i`).
struct CurlStream {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Everything read so far, for failure messages.
    seen: Vec<String>,
}

impl CurlStream {
    /// Opens `GET url` with curl over `http`, not verifying the certificate (`-k`), unbuffered
    /// (`-N`), and waits for its `200` status line.
    async fn open(http: Http, url: &str) -> CurlStream {
        let mut child = Command::new("curl")
            .args(["-k", "-sS", "-N", "-i", http.flag(), "-H"])
            .arg("Accept: text/event-stream")
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run curl (install Debian's curl: apt-get install -y curl): {e}")
            });
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stream = CurlStream {
            child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        };
        let status = stream.next_line("the status line").await;
        assert!(
            status.starts_with(http.status_line()),
            "GET {url} with {}: expected `{}`, got `{status}`",
            http.flag(),
            http.status_line()
        );
        stream
    }

    /// The next line of output (without its line break); panics at the end of the output or
    /// after [`WAIT`], naming `what` was awaited.
    async fn next_line(&mut self, what: &str) -> String {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("timed out after {WAIT:?} awaiting {what}; {self}"))
            .unwrap_or_else(|e| panic!("reading curl's output: {e}"));
        let Some(line) = line else {
            panic!(
                "curl's output ended awaiting {what}; {}",
                self.finish().await
            );
        };
        let line = line.trim_end_matches('\r').to_owned();
        self.seen.push(line.clone());
        line
    }

    /// Reads lines until one equals `wanted`.
    async fn line(&mut self, wanted: &str) {
        while self.next_line(&format!("the line `{wanted}`")).await != wanted {}
    }

    /// Waits for curl to reach the end of the response and exit; its exit status.
    async fn end(&mut self, what: &str) -> ExitStatus {
        let rest = tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                self.seen.push(line);
            }
            self.child.wait().await
        })
        .await;
        match rest {
            Ok(status) => status.expect("waiting for curl"),
            Err(_) => panic!("timed out after {WAIT:?} awaiting {what}; {self}"),
        }
    }

    /// What curl printed so far and its stderr, once it has exited (killed if need be).
    async fn finish(&mut self) -> String {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr).await;
        }
        format!("{self}; curl's stderr: {stderr}")
    }
}

impl std::fmt::Display for CurlStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "curl printed {:?}", self.seen)
    }
}

/// `POST {base}{path_and_query}` with `body` through curl over `http`; the status and the HTTP
/// version curl reports.
async fn curl_post(http: Http, base: &str, path_and_query: &str, body: &str) -> (String, String) {
    let output = tokio::time::timeout(
        WAIT,
        Command::new("curl")
            .args([
                "-k",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
            ])
            .args([http.flag(), "--data-binary", body])
            .arg(format!("{base}{path_and_query}"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("timed out after {WAIT:?} on POST {path_and_query}"))
    .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
    let written = String::from_utf8_lossy(&output.stdout).into_owned();
    let (status, version) = written.split_once(' ').unwrap_or_else(|| {
        panic!(
            "curl POST {path_and_query}: unexpected output `{written}`, stderr {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (status.to_owned(), version.to_owned())
}

/// Opens a stream over `http` on the TLS harness, sends it a message through
/// `POST /_control/send` over the same version, and waits for the message on the stream.
async fn a_stream_receives(http: Http) {
    let certs = certs(&format!("receives-{}", http.write_out()));
    let (_harness, base) = start_tls(&certs, &[]).await;
    let (room, client) = (new_id(), new_id());
    let mut stream = CurlStream::open(
        http,
        &format!("{base}/files/{room}/pull?clientId={client}&events=normal-event"),
    )
    .await;
    // The stream has joined its room once its head is sent; the message is sent after that.
    let message = format!("hello over HTTP/{}", http.write_out());
    let sent = curl_post(
        http,
        &base,
        &format!("/_control/send?event=normal-event&room={room}"),
        &message,
    )
    .await;
    assert_eq!(sent, ("200".to_owned(), http.write_out().to_owned()));
    stream.line("event: normal-event").await;
    stream.line(&format!("data: {message}")).await;
}

/// `curl --http2` over TLS negotiates HTTP/2 by ALPN, and its SSE stream receives a message.
#[tokio::test]
async fn http2_is_negotiated_over_tls_and_its_stream_receives() {
    a_stream_receives(Http::Two).await;
}

/// `curl --http1.1` over TLS gets HTTP/1.1 (the lean path, over the TLS stream), and its stream
/// receives a message, flushed through TLS at once.
#[tokio::test]
async fn http11_over_tls_is_served_and_its_stream_receives() {
    a_stream_receives(Http::OneOne).await;
}

/// `SIGTERM` drains TLS connections as it does cleartext ones: an HTTP/2 stream and an HTTP/1.1
/// stream both end (curl exits 0 on a complete response), the harness exits 0, and its exit log
/// has one `conn:close` for each.
#[tokio::test]
async fn the_drain_ends_tls_streams_of_both_versions() {
    let certs = certs("drain");
    let (mut harness, base) = start_tls(&certs, &[("SSEIO_SHUTDOWN_GRACE_MS", "200")]).await;
    let room = new_id();
    let mut streams = Vec::new();
    for http in [Http::Two, Http::OneOne] {
        let client = new_id();
        let url = format!("{base}/files/{room}/pull?clientId={client}&events=normal-event");
        streams.push((client, http, CurlStream::open(http, &url).await));
    }
    harness.terminate();
    for (_, http, stream) in &mut streams {
        let status = stream.end(&format!("the {http:?} stream to end")).await;
        assert!(
            status.success(),
            "curl {} ends with a complete response: {status}; {stream}",
            http.flag()
        );
    }
    let status = harness.wait_exit(WAIT).await;
    assert!(
        status.success(),
        "the harness exits 0 after draining: {status}"
    );
    let log: Vec<LogRecord> = harness.exit_log(WAIT).await;
    for (client, http, _) in &streams {
        let closes = log
            .iter()
            .filter(|r| r.is_conn("conn:close", client))
            .count();
        assert_eq!(closes, 1, "one conn:close for the {http:?} stream: {log:?}");
    }
}

/// Runs the harness with `env` (and no other TLS setting), expecting it to refuse to start: its
/// exit status and stderr.
async fn refused_start(env: &[(&str, &str)]) -> (ExitStatus, String) {
    let output = tokio::time::timeout(
        WAIT,
        Command::new(HARNESS)
            .env("PORT", "0")
            .env_remove("SSEIO_TLS_CERT")
            .env_remove("SSEIO_TLS_KEY")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("the harness did not exit within {WAIT:?} with {env:?}"))
    .expect("the harness runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.contains("listening"),
        "the harness started serving with {env:?}: {stdout}"
    );
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Bad TLS material is a startup error: the harness exits 1 before it listens, and its stderr
/// names the file and what is wrong with it, whether a file is missing, holds no certificate or
/// key, or holds a key of another certificate; setting only one of the two variables is one too.
#[tokio::test]
async fn bad_tls_material_is_a_startup_error_naming_the_file() {
    let good = certs("bad-material");
    let other = certs("bad-material-other");
    let dir = good.cert.parent().expect("a directory").to_owned();
    let missing = dir.join("missing.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "certainly not PEM\n").expect("write garbage");
    let (cert, key) = (path_str(&good.cert), path_str(&good.key));
    let (missing, garbage) = (path_str(&missing), path_str(&garbage));
    let other_key = path_str(&other.key);

    let cases: [(&str, &str, String); 5] = [
        (missing, key, format!("cannot read {missing}: ")),
        (cert, missing, format!("cannot read {missing}: ")),
        (garbage, key, format!("no certificate in {garbage}")),
        (cert, garbage, format!("no private key in {garbage}")),
        (
            cert,
            other_key,
            format!("the private key in {other_key} does not belong to the certificate in {cert}"),
        ),
    ];
    for (cert, key, expected) in cases {
        let env = [("SSEIO_TLS_CERT", cert), ("SSEIO_TLS_KEY", key)];
        let (status, stderr) = refused_start(&env).await;
        assert_eq!(
            status.code(),
            Some(1),
            "exit status with {env:?}; stderr: {stderr}"
        );
        assert!(
            stderr.contains(&expected),
            "stderr with {env:?} should say `{expected}`: {stderr}"
        );
        assert!(
            !stderr.contains("panicked"),
            "a startup error, not a panic: {stderr}"
        );
    }

    let (status, stderr) = refused_start(&[("SSEIO_TLS_CERT", cert)]).await;
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("SSEIO_TLS_KEY is not"), "{stderr}");
}

/// TLS is the standalone server's: asked for together with `SSEIO_SERVE=framework` (the axum app
/// under `axum::serve`, which has no TLS), it is a startup error naming both, not a cleartext
/// server that ignored the certificate.
#[tokio::test]
async fn tls_with_the_framework_way_is_a_startup_error() {
    let good = certs("framework");
    let (cert, key) = (path_str(&good.cert), path_str(&good.key));
    let env = [
        ("SSEIO_TLS_CERT", cert),
        ("SSEIO_TLS_KEY", key),
        ("SSEIO_SERVE", "framework"),
    ];
    let (status, stderr) = refused_start(&env).await;
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("SSEIO_TLS_CERT") && stderr.contains("SSEIO_SERVE=lean"),
        "{stderr}"
    );
}
