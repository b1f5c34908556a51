//! A real nginx in front of a server under test, serving one of the configurations of
//! `docs/nginx/` exactly as a user deploys it: the test changes only the address nginx listens on
//! (`listen 80;` becomes a free port of 127.0.0.1) and the application's address
//! (`127.0.0.1:3000` becomes the server's).
//!
//! nginx is started by the test, never as a system service: `nginx -p <prefix> -c <conf> -e
//! <log>` with `daemon off;`, its pid file, logs and temporary directories inside a fresh prefix
//! directory, and a top-level configuration of nginx's defaults that includes the
//! `docs/nginx/` file. It is stopped when the [`Nginx`] is dropped, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long nginx may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopped nginx may take to stop its workers and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How many free ports to try when another process took the one chosen first.
const START_ATTEMPTS: usize = 3;

/// The line of a `docs/nginx/` file that the test replaces with its own `listen`.
const LISTEN: &str = "listen 80;";
/// The application's address in a `docs/nginx/` file, replaced with the server's.
const APP: &str = "127.0.0.1:3000";

/// The nginx configurations of `docs/nginx/`, as users deploy them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NginxConfig {
    /// `docs/nginx/minimal.conf`: nginx's defaults and one `proxy_pass`, so nginx speaks
    /// HTTP/1.0 to the server, one connection per request, with buffering on.
    Minimal,
    /// `docs/nginx/sse.conf`: the recommended configuration, HTTP/1.1 to the server through a
    /// keep-alive pool, buffering off.
    Sse,
}

impl NginxConfig {
    /// Both configurations.
    pub const ALL: [NginxConfig; 2] = [NginxConfig::Minimal, NginxConfig::Sse];

    /// `nginx_minimal` or `nginx_sse`, for test names.
    pub fn name(self) -> &'static str {
        match self {
            NginxConfig::Minimal => "nginx_minimal",
            NginxConfig::Sse => "nginx_sse",
        }
    }

    /// The file's path in the repository.
    pub fn path(self) -> &'static str {
        match self {
            NginxConfig::Minimal => "docs/nginx/minimal.conf",
            NginxConfig::Sse => "docs/nginx/sse.conf",
        }
    }

    /// The file's text, as users deploy it.
    pub fn text(self) -> &'static str {
        match self {
            NginxConfig::Minimal => include_str!("../../docs/nginx/minimal.conf"),
            NginxConfig::Sse => include_str!("../../docs/nginx/sse.conf"),
        }
    }

    /// How many idle connections to the server nginx keeps per worker: the file's
    /// `keepalive N;`, 0 without one (nginx then closes each connection after its response).
    ///
    /// # Panics
    ///
    /// When the file's `keepalive` is not a number.
    pub fn keepalive(self) -> usize {
        directives(self.text())
            .find_map(|line| line.strip_prefix("keepalive "))
            .map_or(0, |n| {
                n.trim_end_matches(';')
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{}: bad `keepalive {n}`", self.path()))
            })
    }

    /// The file with its `listen 80;` on `127.0.0.1:<port>` and its application at `upstream`
    /// (`host:port`).
    ///
    /// # Panics
    ///
    /// When the file does not have exactly one `listen 80;` and one `127.0.0.1:3000` outside
    /// comments: the test could not run it as users deploy it.
    pub fn render(self, port: u16, upstream: &str) -> String {
        let listen = format!("listen 127.0.0.1:{port};");
        let (mut listens, mut apps) = (0, 0);
        let mut rendered = String::with_capacity(self.text().len());
        for line in self.text().lines() {
            if line.trim_start().starts_with('#') {
                rendered.push_str(line);
            } else {
                listens += line.matches(LISTEN).count();
                apps += line.matches(APP).count();
                rendered.push_str(&line.replace(LISTEN, &listen).replace(APP, upstream));
            }
            rendered.push('\n');
        }
        assert!(
            listens == 1 && apps == 1,
            "{} must have exactly one `{LISTEN}` and one `{APP}` outside comments (the test \
             replaces them with its own ports), not {listens} and {apps}",
            self.path()
        );
        rendered
    }
}

/// The lines of an nginx configuration that are not comments, trimmed.
fn directives(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
}

/// One nginx (a master and one worker) in a prefix directory of its own, in front of one server.
#[derive(Debug)]
pub struct Nginx {
    config: NginxConfig,
    port: u16,
    prefix: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx with `config` in front of the server at `upstream` (`host:port`) and waits
    /// until it accepts connections.
    ///
    /// # Panics
    ///
    /// When nginx is not installed (`scripts/test-all` installs Debian's `nginx`), rejects the
    /// configuration, or does not accept connections in time; the message has its error log.
    pub async fn start(config: NginxConfig, upstream: &str) -> Nginx {
        let bin = nginx_binary();
        for attempt in 1..=START_ATTEMPTS {
            let mut nginx = Nginx::spawn(&bin, config, upstream);
            match nginx.wait_ready().await {
                Ok(()) => return nginx,
                // Another process took the port between `free_port` and nginx's bind.
                Err(_) if attempt < START_ATTEMPTS && nginx.error_log().contains("in use") => {}
                // The error log follows, printed as the `Nginx` is dropped.
                Err(why) => panic!(
                    "nginx did not start with {} ({why}; prefix {})",
                    config.path(),
                    nginx.prefix.display()
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Writes the configuration into a fresh prefix directory and starts nginx on a free port.
    fn spawn(bin: &Path, config: NginxConfig, upstream: &str) -> Nginx {
        let prefix = std::env::temp_dir().join(format!("sseio-nginx-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&prefix).expect("a prefix directory for nginx");
        // Run as root (as in CI), nginx starts its worker as `nobody`, which must reach the
        // temporary directories nginx creates (and hands to it) in here, whatever the umask.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&prefix, std::fs::Permissions::from_mode(0o755))
                .expect("making nginx's prefix directory readable by its worker");
        }
        let port = free_port();
        let site = prefix.join("site.conf");
        std::fs::write(&site, config.render(port, upstream)).expect("writing site.conf");
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, top_level(&prefix, &site)).expect("writing nginx.conf");
        let mut nginx = Nginx {
            config,
            port,
            prefix,
            child: None,
        };
        let child = Command::new(bin)
            .arg("-p")
            .arg(&nginx.prefix)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(nginx.prefix.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // A process group of its own, so that nothing of it outlives the test (see `Drop`).
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        nginx.child = Some(child);
        nginx
    }

    /// Waits until nginx accepts connections; why not, when it exits or does not in time.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(format!("it exited: {status}"));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("no connection accepted within {START_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The configuration nginx serves.
    pub fn config(&self) -> NginxConfig {
        self.config
    }

    /// nginx's base URL, such as `http://127.0.0.1:43117`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default()
    }

    /// The lines of the error log at level `error` or above (`crit`, `alert`, `emerg`): what
    /// nginx reports as a failure, such as an upstream that closed mid-response or answered
    /// something nginx could not parse. (`info` has every client that went away.)
    pub fn errors(&self) -> Vec<String> {
        self.error_log()
            .lines()
            .filter(|line| {
                ["[error]", "[crit]", "[alert]", "[emerg]"]
                    .iter()
                    .any(|level| line.contains(level))
            })
            .map(str::to_owned)
            .collect()
    }

    /// Fails the test when nginx logged an error ([`Nginx::errors`]).
    ///
    /// # Panics
    ///
    /// When it did, with those lines.
    pub fn assert_no_errors(&self) {
        let errors = self.errors();
        assert!(
            errors.is_empty(),
            "nginx ({}) logged errors:\n{}",
            self.config.path(),
            errors.join("\n")
        );
    }
}

impl Drop for Nginx {
    /// Stops nginx: `SIGTERM` to the master, which stops its worker and waits for it; should it
    /// not exit in time, `SIGKILL` to its whole process group. Then removes the prefix directory
    /// (after printing the error log, when the test is failing).
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Some(pid) = child.id()
        {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let deadline = std::time::Instant::now() + STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "nginx's error log ({}):\n{}",
                self.config.path(),
                self.error_log()
            );
        }
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}

/// nginx's top-level configuration: nginx's defaults, with everything it writes inside `prefix`,
/// and the site configuration included in the `http` context, as Debian's `conf.d/` files are.
fn top_level(prefix: &Path, site: &Path) -> String {
    let p = prefix.display();
    format!(
        "# Written by conformance-tests: a private nginx for one test, everything in its prefix.\n\
         daemon off;\n\
         worker_processes 1;\n\
         pid {p}/nginx.pid;\n\
         lock_file {p}/nginx.lock;\n\
         error_log {p}/error.log info;\n\
         events {{\n    worker_connections 1024;\n}}\n\
         http {{\n\
         \x20   access_log {p}/access.log;\n\
         \x20   client_body_temp_path {p}/client_body_temp;\n\
         \x20   proxy_temp_path {p}/proxy_temp;\n\
         \x20   fastcgi_temp_path {p}/fastcgi_temp;\n\
         \x20   uwsgi_temp_path {p}/uwsgi_temp;\n\
         \x20   scgi_temp_path {p}/scgi_temp;\n\
         \x20   include {};\n\
         }}\n",
        site.display()
    )
}

/// The nginx binary: `nginx` on the `PATH`, else Debian's `/usr/sbin/nginx` (not on every
/// user's `PATH`).
///
/// # Panics
///
/// When neither exists, with how to install it.
fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nginx"))
            .find(|bin| bin.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|bin| bin.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed: the proxy tests run Debian's nginx, started by the test \
                 itself (`apt-get install nginx`; `scripts/test-all` installs it)"
            )
        })
}

/// A port that was free a moment ago (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_renders_with_the_test_ports() {
        for config in NginxConfig::ALL {
            let rendered = config.render(8081, "127.0.0.1:9091");
            assert!(rendered.contains("listen 127.0.0.1:8081;"), "{rendered}");
            assert!(rendered.contains("127.0.0.1:9091;"), "{rendered}");
            assert!(!directives(&rendered).any(|l| l.contains(APP) || l.contains(LISTEN)));
        }
    }

    /// The deployment guide shows each configuration the tests run, exactly as it is.
    #[test]
    fn the_deployment_guide_shows_every_config_verbatim() {
        let guide = include_str!("../../docs/deploying.md");
        for config in NginxConfig::ALL {
            let shown = format!("```nginx\n{}```\n", config.text());
            assert!(
                guide.contains(&shown),
                "docs/deploying.md must show {} verbatim in an nginx code block",
                config.path()
            );
        }
    }

    #[test]
    fn only_the_recommended_config_keeps_a_pool() {
        assert_eq!(NginxConfig::Minimal.keepalive(), 0);
        assert_eq!(NginxConfig::Sse.keepalive(), 16);
    }
}
