//! The Debian package: installed with `dpkg` into a scratch root (its own package database,
//! so the machine is not touched), its watcher run against the test etcd, then removed and
//! purged. `tests/run.sh` builds the package up front (`cargo deb`) and hands it over in
//! `DOCKREG_TEST_DEB`.

use crate::harness::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The package to test.
fn package() -> PathBuf {
    let deb = std::env::var_os("DOCKREG_TEST_DEB")
        .map(PathBuf::from)
        .expect(
            "DOCKREG_TEST_DEB: the .deb to test (tests/run.sh builds it: cargo run --example \
         gen_docs -- target/docs && cargo deb)",
        );
    assert!(deb.exists(), "{} missing", deb.display());
    deb
}

/// `dpkg --root <root> <args>`, which must succeed.
fn dpkg(root: &Path, args: &[&str]) {
    let o = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg(format!("--log={}", root.join("dpkg.log").display()))
        .args(["--force-depends", "--force-not-root"])
        .args(args)
        .output()
        .expect("dpkg");
    assert!(
        o.status.success(),
        "dpkg {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_installs_runs_and_goes_away() {
    let deb = package();
    let mut w = World::new().await;
    w.put("/service/10.0.0.1:80", "running").await;
    let root = w.path().join("root");
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    dpkg(&root, &["-i", &deb.display().to_string()]);
    let installed = [
        "usr/bin/dockreg-haproxy",
        "usr/bin/dockreg",
        "usr/lib/systemd/system/dockreg-haproxy.service",
        "usr/lib/systemd/system/haproxy.service.d/dockreg.conf",
        "etc/dockreg/dockreg-haproxy.toml",
        "usr/lib/systemd/system/dockreg-agent.service",
        "etc/dockreg/dockreg-agent.toml",
        "usr/share/dockreg/templates/per-service.cfg.tera",
        "usr/share/bash-completion/completions/dockreg-haproxy",
        "usr/share/zsh/vendor-completions/_dockreg",
        "usr/share/fish/vendor_completions.d/dockreg-haproxy.fish",
    ];
    for f in installed {
        assert!(root.join(f).exists(), "{f} not installed");
    }
    let man = root.join("usr/share/man/man1");
    assert!(
        ["dockreg-haproxy.1", "dockreg-haproxy.1.gz"]
            .iter()
            .any(|m| man.join(m).exists()),
        "no man page in {}",
        man.display()
    );
    // The installed watcher, with the installed template, against the test etcd.
    let out = w.path().join("from-package.cfg");
    let o = Command::new(root.join("usr/bin/dockreg-haproxy"))
        .args(["--etcd", &w.etcd.url(), "--once", "--no-validate"])
        .arg("--template")
        .arg(root.join("usr/share/dockreg/templates/per-service.cfg.tera"))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("server 10.0.0.1_80 10.0.0.1:80"));
    let sidekick = Command::new(root.join("usr/bin/dockreg"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(sidekick.status.success());
    // Removed: the programs go, the config file (a conffile) stays until purged.
    dpkg(&root, &["-r", "dockreg"]);
    assert!(!root.join("usr/bin/dockreg-haproxy").exists());
    assert!(root.join("etc/dockreg/dockreg-haproxy.toml").exists());
    dpkg(&root, &["-P", "dockreg"]);
    assert!(!root.join("etc/dockreg/dockreg-haproxy.toml").exists());
}
