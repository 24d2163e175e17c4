//! The deployment files, checked as far as this machine can without Docker: the Dockerfile
//! builds this workspace (what it COPYs exists, the build command names the binary, the
//! runtime runs as an unprivileged user), the compose file is consistent (every config file
//! it mounts exists, every secret a service uses is declared, the migration runs before the
//! processors), and the systemd units carry the hardening keys (and pass `systemd-analyze
//! verify` where it is installed).

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn dockerfile_builds_this_workspace_and_runs_unprivileged() {
    let text = read("Dockerfile");
    // Logical lines (continuations joined).
    let lines: Vec<String> = text
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let stages: Vec<&String> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "multi-stage: build and runtime");
    assert!(stages[1].starts_with("FROM debian:12-slim"), "slim Debian 12 runtime: {}", stages[1]);
    let ignore = read(".dockerignore");
    let ignored: Vec<&str> = ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for l in lines.iter().filter(|l| l.starts_with("COPY ") && !l.contains("--from=")) {
        let args: Vec<&str> = l.split_whitespace().skip(1).collect();
        for src in &args[..args.len() - 1] {
            assert!(root().join(src).exists(), "COPY {src}: no such file in the repository");
            assert!(!ignored.iter().any(|i| i.trim_end_matches('/') == *src), "{src} is in .dockerignore");
        }
    }
    // Everything the release build needs is copied: the workspace members, the declared
    // benches, and the files compiled into the binary.
    let copied = |p: &str| {
        lines.iter().any(|l| {
            l.starts_with("COPY ")
                && l.split_whitespace().any(|w| p.starts_with(w.trim_end_matches('/')) && w != "COPY" && w != "./")
        })
    };
    let manifest: toml::Value = toml::from_str(&read("Cargo.toml")).unwrap();
    for m in manifest["workspace"]["members"].as_array().unwrap() {
        assert!(copied(m.as_str().unwrap()), "workspace member {m} is copied");
    }
    assert!(copied("benches/parse.rs") && copied("src/main.rs") && copied("deploy/local/chdb_http.py"));
    assert!(copied("Cargo.lock"));
    for ignored_dir in ["target/", ".git/", "deploy/secrets/"] {
        assert!(ignored.contains(&ignored_dir), "{ignored_dir} stays out of the build context");
    }
    // The build command matches the workspace: the binary package's name, locked, release.
    let bin = manifest["package"]["default-run"].as_str().unwrap();
    let build = lines.iter().find(|l| l.starts_with("RUN cargo build")).expect("a cargo build step");
    assert!(
        build.contains("--release") && build.contains("--locked") && build.contains(&format!("--bin {bin}")),
        "{build}"
    );
    assert!(build.contains(&format!("target/release/{bin}")));
    // rdkafka's features need these system libraries, at build time and at run time.
    let features = manifest["workspace"]["dependencies"]["rdkafka"]["features"].as_array().unwrap();
    assert!(
        features.iter().any(|f| f.as_str() == Some("ssl"))
            && features.iter().any(|f| f.as_str() == Some("zstd-pkg-config"))
    );
    assert!(!features.iter().any(|f| f.as_str().unwrap().contains("cmake")), "no cmake build: none installed");
    assert!(text.contains("libssl-dev") && text.contains("libzstd-dev") && text.contains("pkg-config"));
    assert!(text.contains("libssl3") && text.contains("libzstd1") && text.contains("ca-certificates"));
    // Non-root, sitelog as the entrypoint.
    let user = lines.iter().rev().find(|l| l.starts_with("USER ")).expect("a USER in the runtime stage");
    let who = user[5..].split(':').next().unwrap().trim();
    assert!(who != "0" && who != "root", "{user}");
    assert!(
        lines.iter().rev().position(|l| l.starts_with("USER "))
            < lines.iter().rev().position(|l| l.starts_with("FROM "))
    );
    assert!(lines.iter().any(|l| l == "ENTRYPOINT [\"/usr/local/bin/sitelog\"]"));
}

/// compose.yaml as JSON (PyYAML: no YAML crate in the workspace for one test).
fn compose() -> serde_json::Value {
    let out = Command::new("python3")
        .args(["-c", "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"])
        .arg(root().join("deploy/compose.yaml"))
        .output()
        .expect("python3 with PyYAML");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn compose_is_consistent() {
    let c = compose();
    let services = c["services"].as_object().unwrap();
    let declared = c["secrets"].as_object().unwrap();
    let deploy = root().join("deploy");
    let secrets_doc = read("deploy/secrets/README.md");
    for (name, s) in services {
        for v in s["volumes"].as_array().into_iter().flatten() {
            let host = v.as_str().unwrap().split(':').next().unwrap();
            if host.starts_with('.') {
                assert!(deploy.join(host).exists(), "{name}: mounts {host}, which does not exist");
            } else {
                assert!(c["volumes"].get(host).is_some(), "{name}: volume {host} is declared");
            }
        }
        for sec in s["secrets"].as_array().into_iter().flatten() {
            let sec = sec.as_str().unwrap();
            let file = declared.get(sec).unwrap_or_else(|| panic!("{name}: secret {sec} is not declared"))["file"]
                .as_str()
                .unwrap();
            assert!(file.starts_with("./secrets/"), "{sec}: {file}");
            assert!(secrets_doc.contains(&format!("`{}`", &file["./secrets/".len()..])), "{sec} is documented");
        }
        let env = serde_json::to_string(&s["environment"]).unwrap().to_ascii_lowercase();
        assert!(
            !env.contains("password\":\"") || env.contains("_file"),
            "{name}: no password in the environment: {env}"
        );
    }
    // The image is built from the repository's Dockerfile.
    for name in ["migrate", "processor"] {
        let s = &services[name];
        assert_eq!(s["image"], "sitelog:latest");
        assert_eq!(s["build"]["dockerfile"], "Dockerfile");
        assert!(deploy.join(s["build"]["context"].as_str().unwrap()).join("Dockerfile").exists());
    }
    // One-shot migration before the processors; health checks gate the order.
    assert_eq!(services["migrate"]["command"][0], "schema");
    assert_eq!(services["migrate"]["command"][1], "migrate");
    assert_eq!(services["processor"]["depends_on"]["migrate"]["condition"], "service_completed_successfully");
    assert_eq!(services["processor"]["depends_on"]["kafka"]["condition"], "service_healthy");
    assert_eq!(services["migrate"]["depends_on"]["clickhouse"]["condition"], "service_healthy");
    for s in ["kafka", "clickhouse"] {
        assert!(services[s]["healthcheck"]["test"].is_array(), "{s} has a health check");
    }
    // Kafka serves clients over TLS + SCRAM only.
    let kenv = &services["kafka"]["environment"];
    assert_eq!(kenv["KAFKA_ADVERTISED_LISTENERS"], "SASL_SSL://kafka:9093");
    assert_eq!(kenv["KAFKA_SASL_ENABLED_MECHANISMS"], "SCRAM-SHA-512");
    // The configs the services mount parse, and use files for their secrets.
    for (file, user) in
        [("compose/processor.toml", "sitelog_processor_user"), ("compose/migrator.toml", "sitelog_migrator_user")]
    {
        let cfg = sitelog_processor::config::ProcessorConfig::from_toml(&read(&format!("deploy/{file}")), file)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(cfg.clickhouse.user, user);
        assert!(cfg.clickhouse.password_file.is_some() && cfg.clickhouse.password.is_none());
    }
}

#[test]
fn systemd_units_are_hardened() {
    let dir = root().join("deploy/systemd");
    for unit in ["sitelog-collect.service", "sitelog-process.service"] {
        let text = read(&format!("deploy/systemd/{unit}"));
        for key in [
            "CapabilityBoundingSet=\n",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n",
            "SystemCallFilter=@system-service\n",
            "ProtectKernelTunables=yes\n",
            "ProtectKernelModules=yes\n",
            "ProtectKernelLogs=yes\n",
            "NoNewPrivileges=yes\n",
            "ProtectSystem=strict\n",
            "User=sitelog\n",
        ] {
            assert!(text.contains(key), "{unit}: {}", key.trim());
        }
        // systemd-analyze verify where installed: nothing but the binary not being installed here.
        if let Ok(out) = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(dir.join(unit)).output() {
            let err = String::from_utf8_lossy(&out.stderr);
            for line in err.lines().filter(|l| !l.trim().is_empty()) {
                assert!(line.contains("/usr/local/bin/sitelog is not executable"), "{unit}: {line}");
            }
        }
    }
    let sysusers = read("deploy/systemd/sitelog.sysusers.conf");
    assert!(sysusers.lines().any(|l| l.starts_with("u sitelog ")), "{sysusers}");
    assert!(read("deploy/systemd/sitelog-process.service").contains("--metrics-addr 127.0.0.1:10472"));
}
