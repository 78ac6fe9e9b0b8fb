//! Runs `nft` and `ipset`: found on `PATH` or in `/usr/sbin` and `/sbin` (where distributions
//! put them, and where a service's or a user's `PATH` may not reach), fed a script on standard
//! input, bounded in time so a stuck tool cannot hold the output or shutdown.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one run may take: loading millions of elements takes seconds, not this.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// The most of a tool's error output quoted in a message.
const MAX_ERROR_CHARS: usize = 600;
/// Where the tools live when `PATH` does not say.
const SYSTEM_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// A firewall tool, found.
#[derive(Debug, Clone)]
pub(crate) struct Tool {
    pub program: PathBuf,
}

/// The first executable file called `name` in `path`'s directories, then in the system's.
pub(crate) fn find(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    let dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    dirs.into_iter()
        .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl Tool {
    /// Finds `name` on this machine, or says how to get it.
    pub(crate) fn locate(name: &str, package: &str) -> Result<Tool, String> {
        find(name, std::env::var_os("PATH").as_deref())
            .map(|program| Tool { program })
            .ok_or_else(|| {
                format!("the `{name}` tool is not installed (apt-get install {package}, dnf install {package})")
            })
    }

    /// Runs the tool with `args`, `script` on its standard input; returns its standard output,
    /// or its error output when it fails.
    pub(crate) fn run(&self, args: &[&str], script: &[u8]) -> Result<String, String> {
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let (status, out, err) = std::thread::scope(|s| {
            // Written and read on threads of their own: a tool that stops reading to report an
            // error must not leave this side blocked on a full pipe.
            s.spawn(move || {
                if let Some(mut stdin) = stdin {
                    let _ = stdin.write_all(script);
                }
            });
            let out = s.spawn(move || read_all(stdout));
            let err = s.spawn(move || read_all(stderr));
            let status = wait(&mut child);
            (
                status,
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default(),
            )
        });
        match status {
            Ok(s) if s.success() => Ok(out),
            Ok(s) => Err(format!(
                "{} failed ({s}): {}",
                self.name(),
                excerpt(if err.trim().is_empty() { &out } else { &err })
            )),
            Err(e) => Err(e),
        }
    }

    fn name(&self) -> String {
        self.program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

fn read_all(r: Option<impl Read>) -> String {
    let mut buf = Vec::new();
    if let Some(mut r) = r {
        let _ = r.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Waits for the child, killing it after [`RUN_TIMEOUT`]. Polls: the tool usually finishes in a
/// few milliseconds, and a blocking wait could not be bounded.
fn wait(child: &mut std::process::Child) -> Result<std::process::ExitStatus, String> {
    let started = Instant::now();
    let mut pause = Duration::from_micros(500);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if started.elapsed() > RUN_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {RUN_TIMEOUT:?}; killed"));
            }
            Ok(None) => {
                std::thread::park_timeout(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("waiting for the tool: {e}")),
        }
    }
}

/// A tool's error output on one line, shortened.
fn excerpt(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(MAX_ERROR_CHARS) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_found_on_path_first_then_in_the_system_directories() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("sh");
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find("sh", Some(dir.path().as_os_str())), Some(fake));
        // Not on PATH: found where the system keeps it.
        let sh = find("sh", Some(OsStr::new("/nonexistent"))).unwrap();
        assert!(sh.starts_with("/usr") || sh.starts_with("/bin"), "{sh:?}");
        assert_eq!(find("no-such-tool-anywhere", None), None);
        assert!(
            Tool::locate("no-such-tool-anywhere", "pkg")
                .unwrap_err()
                .contains("apt-get install pkg")
        );
    }

    #[test]
    fn a_run_returns_output_or_the_tools_own_words() {
        let sh = Tool {
            program: find("sh", None).unwrap(),
        };
        assert_eq!(sh.run(&["-s"], b"echo hi").unwrap(), "hi\n");
        let e = sh
            .run(&["-s"], b"echo 'Error: no such set' >&2\nexit 3")
            .unwrap_err();
        assert!(e.contains("no such set") && e.contains('3'), "{e}");
        // A tool that does not read its input still finishes.
        let big = vec![b'#'; 4 << 20];
        assert!(sh.run(&["-c", "exit 0"], &big).is_ok());
    }
}
