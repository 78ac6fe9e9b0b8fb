//! The command line: help, version, and bad values as one-line errors with exit code 2.

use std::process::Command;

use crate::harness::*;

fn run(args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(args)
        .current_dir(dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn help_lists_every_upstream_flag_and_version_prints_it() {
    let (code, out, _) = run(&["-h"]);
    assert_eq!(code, 0);
    for flag in [
        "-f", "-j", "-l", "-p", "-b", "-a", "-w", "-i", "-c", "-r", "-R", "-t", "-k", "-z", "-g",
        "-N", "-s", "-v", "-d", "-h", "-V",
    ] {
        assert!(
            out.contains(&format!("{flag},")) || out.contains(&format!("{flag} ")),
            "{flag} missing from help:\n{out}"
        );
    }
    for long in [
        "--udp-listen",
        "--tcp-listen",
        "--tls-listen",
        "--api-listen",
        "--db-file",
        "--json-log-file",
    ] {
        assert!(out.contains(long), "{long}");
    }
    let (code, out, _) = run(&["-V"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("sentrypeer {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_bad_address_is_a_one_line_error_naming_the_flag_and_exit_2() {
    let (code, _, err) = run(&["--udp-listen", "127.0.0.1:notaport"]);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--udp-listen") && err.contains("127.0.0.1:notaport"),
        "{err}"
    );
}

#[test]
fn a_port_in_use_is_exit_2_naming_the_flag() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (code, _, err) = run(&["--udp-listen", "127.0.0.1:0", "--tcp-listen", &addr, "-N"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tcp-listen") && err.contains(&addr), "{err}");
    assert!(err.to_lowercase().contains("in use"), "{err}");
}

#[test]
fn an_unreadable_certificate_is_exit_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let (code, _, err) = run(&[
        "--udp-listen",
        "127.0.0.1:0",
        "--tcp-listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "-t",
        cert.to_str().unwrap(),
        "-k",
        key.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("-t (--cert)") && err.contains(cert.to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn environment_switches_work_even_set_to_zero() {
    let node = Node::start_with(NodeOptions {
        envs: vec![
            ("SENTRYPEER_JSON_LOG", "0".into()),
            ("SENTRYPEER_SIP_RESPONSIVE", "0".into()),
        ],
        ..Default::default()
    });
    let s = node.send_udp(&options("100", "env", 1));
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        s.recv(&mut buf).is_ok(),
        "SENTRYPEER_SIP_RESPONSIVE=0 switched responsive mode on"
    );
    node.wait_rows(1);
    let path = node.path("sentrypeer_json.log");
    assert!(poll(DEFAULT_WAIT, || std::fs::read_to_string(&path)
        .map(|t| t.lines().count() == 1 && t.contains("\"sip_user_agent\":\"env\""))
        .unwrap_or(false)));
}

/// `SENTRYPEER_WEBHOOK` with no URL posts to upstream's default on this machine, and nowhere else.
#[cfg(feature = "webhook")]
#[test]
fn the_default_webhook_endpoint_is_on_this_machine() {
    let node = Node::start_with(NodeOptions {
        envs: vec![("SENTRYPEER_WEBHOOK", "1".into())],
        ..Default::default()
    });
    let log = node.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("WebHook enabled."))
        .unwrap_or_else(|| panic!("no WebHook line:\n{log}"));
    assert!(line.contains(" endpoint=http://localhost:4000 "), "{line}");
}

/// Deployments that set only the OAuth 2 variables keep starting, as upstream's do.
#[test]
fn oauth2_credentials_without_a_webhook_url_start_with_a_warning() {
    let node = Node::start_with(NodeOptions {
        envs: vec![
            ("SENTRYPEER_OAUTH2_CLIENT_ID", "id".into()),
            ("SENTRYPEER_OAUTH2_CLIENT_SECRET", "hunter2".into()),
        ],
        ..Default::default()
    });
    let log = node.log_text();
    assert!(
        log.contains("WARN") && log.contains("-i/-c") && log.contains("no effect"),
        "{log}"
    );
    assert!(
        !log.contains("WebHook enabled.") && !log.contains("hunter2"),
        "{log}"
    );
    let node = Node::start(&["-i", "id", "-c", "hunter2"]);
    assert!(node.log_text().contains("no effect"), "{}", node.log_text());
}

/// Upstream accepts `-b` without `-p`; so do we, and say it does nothing.
#[test]
fn a_bootstrap_node_without_p2p_starts_with_a_warning() {
    let node = Node::start(&["-b", "bootstrap.example.org"]);
    let log = node.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("-b bootstrap.example.org"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(
        warning.contains("WARN") && warning.contains("no effect"),
        "{warning}"
    );
}

/// `-g` naming a file that does not exist writes it with upstream's defaults and starts, as
/// upstream does; a malformed file is exit 2 naming it.
#[test]
fn a_missing_config_file_is_written_and_a_malformed_one_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join("etc")
        .join("sentrypeer")
        .join("config.toml");
    let node = Node::start(&["-g", path.to_str().unwrap()]);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", path.display(), node.log_text()));
    for line in [
        "cert = \"cert.pem\"",
        "key = \"key.pem\"",
        "tls_listen_address = \"0.0.0.0:5061\"",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    assert!(text.starts_with('#'), "{text}");
    assert!(
        node.log_text().contains("Wrote a config file"),
        "{}",
        node.log_text()
    );
    // The certificate it names (relative: the working directory) was generated there.
    assert!(node.path("cert.pem").exists() && node.path("key.pem").exists());
    drop(node);

    std::fs::write(&path, "cert = [unclosed\n").unwrap();
    let (code, _, err) = run(&["-g", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("-g (--config-file)") && err.contains(path.to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn the_man_page_and_completions_come_from_the_same_flags_as_the_parser() {
    let (code, man, _) = run(&["man"]);
    assert_eq!(code, 0);
    assert!(
        man.starts_with(".ie") || man.contains(".TH sentrypeer"),
        "{man}"
    );
    for flag in [
        "actor\\-ttl",
        "allow\\-file",
        "agent\\-listen",
        "json\\-log\\-file",
    ] {
        assert!(man.contains(flag), "man page lacks {flag}");
    }
    if have("man") {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("sentrypeer.1");
        std::fs::write(&page, &man).unwrap();
        let out = Command::new("man")
            .arg("-l")
            .arg(&page)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("--actor-ttl"));
    }
    for (shell, mark) in [
        ("bash", "_sentrypeer()"),
        ("zsh", "#compdef sentrypeer"),
        ("fish", "complete -c sentrypeer"),
    ] {
        let (code, script, err) = run(&["completions", shell]);
        assert_eq!(code, 0, "{err}");
        assert!(script.contains(mark), "{shell}: {script}");
        assert!(script.contains("actor-ttl"), "{shell} lacks --actor-ttl");
    }
    let (code, _, err) = run(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
}
