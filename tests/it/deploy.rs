//! The operator-facing artefacts, checked offline: every kustomization under
//! `deploy/` renders with `kubectl kustomize` and validates with
//! `kubernetes-validate --strict`; the rendered workloads carry probes,
//! resources, the restricted security context, a drain budget that covers
//! `server.shutdown_grace_secs`, and a config that the real binary accepts
//! with the environment the pod would have; the alert rules pass `promtool
//! check rules` and their unit tests (`promtool test rules`); every metric
//! the alerts and the dashboard query is defined in `src/metrics.rs`; the
//! Dockerfile builds the release binary as a non-root user.
//!
//! `kubectl` and `promtool` come from Debian packages that `scripts/test`
//! installs; kubernetes-validate from its venv. Under `CI=true` a missing tool
//! fails the test; elsewhere the test says SKIP.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;
use sluice::config::{BusKind, Config};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A command-line tool from PATH; fails under CI, skips elsewhere.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        if ci() {
            panic!("{name} is not installed under CI=true: scripts/test installs it (Debian package)");
        }
        eprintln!("SKIP: {name} is not installed (run scripts/test)");
    }
    found
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

// ---------------------------------------------------------------- rendering

/// Every directory under deploy/ that holds a kustomization.yaml.
fn kustomizations() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read deploy dir").flatten().collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.file_name().is_some_and(|n| n == "kustomization.yaml") {
                out.push(dir.to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("deploy"), &mut out);
    out
}

fn rel(dir: &Path) -> String {
    dir.strip_prefix(root()).unwrap_or(dir).display().to_string()
}

fn render(kubectl: &Path, dir: &Path) -> String {
    run(Command::new(kubectl).arg("kustomize").arg(dir))
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn rendered(kubectl: &Path, overlay: &str) -> Vec<Value> {
    documents(&render(kubectl, &root().join(overlay)))
}

/// `v` at a dotted path; numeric segments index sequences.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, seg| match seg.parse::<usize>() {
        Ok(i) => v.get(i),
        Err(_) => v.get(seg),
    })
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

fn kind(v: &Value) -> &str {
    s(v, "kind")
}

fn name(v: &Value) -> &str {
    s(v, "metadata.name")
}

fn is_crd_kind(v: &Value) -> bool {
    s(v, "apiVersion").starts_with("monitoring.coreos.com/")
}

fn of_kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

fn labels_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str().unwrap_or_default().to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// True when every selector label is on the pod (an empty selector matches
/// nothing here: none of ours may be empty).
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

// ---------------------------------------------------------------- tests: render + validate

#[test]
fn every_kustomization_renders_and_validates_strictly() {
    let Some(kubectl) = tool("kubectl") else { return };
    let Some(python) = common::python() else { return };
    let dirs = kustomizations();
    let names: BTreeSet<String> = dirs.iter().map(|d| rel(d)).collect();
    for want in
        ["deploy/base", "deploy/overlays/dev", "deploy/overlays/production", "deploy/monitoring", "deploy/grafana"]
    {
        assert!(names.contains(want), "{want} has no kustomization.yaml; found {names:?}");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    for dir in &dirs {
        let docs = documents(&render(&kubectl, dir));
        assert!(!docs.is_empty(), "{} renders nothing", rel(dir));
        // Operator CRDs have no schema in kubernetes-validate; they are
        // checked structurally below (servicemonitor_…, prometheus_rules_…).
        let builtin: Vec<&Value> = docs.iter().filter(|d| !is_crd_kind(d)).collect();
        for d in docs.iter().filter(|d| is_crd_kind(d)) {
            assert!(
                matches!(kind(d), "ServiceMonitor" | "PrometheusRule"),
                "{}: unexpected custom resource {} {}",
                rel(dir),
                kind(d),
                name(d)
            );
        }
        if builtin.is_empty() {
            continue;
        }
        let file = tmp.path().join(format!("{}.yaml", rel(dir).replace('/', "_")));
        let text: String =
            builtin.iter().map(|d| format!("---\n{}", serde_yaml::to_string(d).expect("yaml"))).collect();
        std::fs::write(&file, text).expect("write rendered");
        let out = run(Command::new(&python).args(["-m", "kubernetes_validate", "--strict"]).arg(&file));
        // Every resource must have been checked against a schema: a kind
        // without one is only a warning to the tool.
        let passed = out.lines().filter(|l| l.contains("passed for resource")).count();
        assert_eq!(passed, builtin.len(), "{}: not every resource was validated:\n{out}", rel(dir));
    }
}

#[test]
fn no_secret_values_are_rendered() {
    let Some(kubectl) = tool("kubectl") else { return };
    for dir in kustomizations() {
        let docs = documents(&render(&kubectl, &dir));
        for d in &docs {
            assert_ne!(kind(d), "Secret", "{}: renders Secret {}; reference it instead", rel(&dir), name(d));
        }
        for dep in of_kind(&docs, "Deployment") {
            for c in containers(dep) {
                for e in c.get("env").and_then(Value::as_sequence).into_iter().flatten() {
                    let var = s(e, "name");
                    let looks_secret =
                        ["KEY", "TOKEN", "SECRET", "PASSWORD"].iter().any(|w| var.to_uppercase().contains(w));
                    if looks_secret {
                        let literal = s(e, "value");
                        assert!(
                            literal.is_empty(),
                            "{}: {} sets {var} to a literal; use valueFrom.secretKeyRef",
                            rel(&dir),
                            name(dep)
                        );
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- workloads

fn containers(dep: &Value) -> Vec<&Value> {
    at(dep, "spec.template.spec.containers")
        .and_then(Value::as_sequence)
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

/// The environment a container would start with: literals as written,
/// Secret references as recognisable dummies.
fn container_env(c: &Value, docs: &[Value]) -> Result<BTreeMap<String, String>, String> {
    if c.get("envFrom").is_some() {
        return Err("envFrom is not supported by this check; list variables under env".into());
    }
    let mut env = BTreeMap::new();
    for e in c.get("env").and_then(Value::as_sequence).into_iter().flatten() {
        let var = s(e, "name").to_string();
        let val = if let Some(v) = e.get("value") {
            v.as_str().unwrap_or_default().to_string()
        } else if let Some(r) = at(e, "valueFrom.secretKeyRef") {
            format!("dummy-secret-{}-{}", s(r, "name"), s(r, "key"))
        } else if let Some(r) = at(e, "valueFrom.configMapKeyRef") {
            let cm = of_kind(docs, "ConfigMap")
                .into_iter()
                .find(|m| name(m) == s(r, "name"))
                .ok_or_else(|| format!("env {var}: ConfigMap {} is not rendered", s(r, "name")))?;
            cm.get("data").and_then(|d| d.get(s(r, "key"))).and_then(Value::as_str).unwrap_or_default().to_string()
        } else {
            return Err(format!("env {var}: unsupported source"));
        };
        env.insert(var, val);
    }
    Ok(env)
}

/// What a Deployment runs: its role, its config file's text and the
/// environment, resolved from the rendered objects.
struct Workload<'a> {
    dep: &'a Value,
    role: String,
    config_text: String,
    env: BTreeMap<String, String>,
    config: Config,
}

fn workload<'a>(dep: &'a Value, docs: &'a [Value]) -> Result<Workload<'a>, String> {
    let c = *containers(dep).first().ok_or("no container")?;
    if c.get("command").is_some() {
        return Err("sets `command`, overriding the image's sluice entrypoint".into());
    }
    let args: Vec<&str> =
        c.get("args").and_then(Value::as_sequence).ok_or("no args")?.iter().filter_map(Value::as_str).collect();
    let role = args.first().ok_or("empty args")?.to_string();
    let cfg_path = args.windows(2).find(|w| w[0] == "--config").map(|w| w[1]).ok_or("no --config argument")?;
    // Which ConfigMap volume holds the file?
    let mounts = c.get("volumeMounts").and_then(Value::as_sequence).ok_or("no volumeMounts")?;
    let (mount, key) = mounts
        .iter()
        .find_map(|m| {
            let mp = s(m, "mountPath").trim_end_matches('/');
            let key = cfg_path.strip_prefix(mp)?.strip_prefix('/')?;
            Some((s(m, "name"), key))
        })
        .ok_or_else(|| format!("--config {cfg_path} is not under any volumeMount"))?;
    let volumes = at(dep, "spec.template.spec.volumes").and_then(Value::as_sequence).ok_or("no volumes")?;
    let vol = volumes.iter().find(|v| s(v, "name") == mount).ok_or("config volume missing")?;
    let cm_name = s(vol, "configMap.name");
    let cm = of_kind(docs, "ConfigMap")
        .into_iter()
        .find(|m| name(m) == cm_name)
        .ok_or_else(|| format!("config volume {mount} is not a rendered ConfigMap ({cm_name:?})"))?;
    let config_text = cm
        .get("data")
        .and_then(|d| d.get(key))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{cm_name} has no {key}"))?;
    let env = container_env(c, docs)?;
    let config = Config::from_yaml(config_text, cfg_path, &|v| env.get(v).cloned()).map_err(|e| e.to_string())?;
    Ok(Workload { dep, role, config_text: config_text.to_string(), env, config })
}

fn quantity(q: &Value) -> Option<f64> {
    let text = match q {
        Value::Number(n) => return n.as_f64(),
        Value::String(s) => s.as_str(),
        _ => return None,
    };
    let units: [(&str, f64); 8] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("m", 0.001),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ];
    for (suffix, mult) in units {
        if let Some(n) = text.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * mult);
        }
    }
    text.parse().ok()
}

fn port_of(c: &Value, port: &Value) -> Option<u64> {
    match port {
        Value::Number(n) => n.as_u64(),
        Value::String(named) => c
            .get("ports")?
            .as_sequence()?
            .iter()
            .find(|p| s(p, "name") == named)
            .and_then(|p| p.get("containerPort")?.as_u64()),
        _ => None,
    }
}

/// Everything a Sluice workload must have; returns the problems found.
fn check_workloads(docs: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let deployments = of_kind(docs, "Deployment");
    if deployments.is_empty() {
        problems.push("no Deployment rendered".to_string());
    }
    for dep in deployments {
        let n = name(dep).to_string();
        let mut p = |msg: String| problems.push(format!("{n}: {msg}"));
        let w = match workload(dep, docs) {
            Ok(w) => w,
            Err(e) => {
                p(e);
                continue;
            }
        };
        let pod = at(dep, "spec.template.spec").cloned().unwrap_or(Value::Null);
        let pod_labels = labels_map(at(dep, "spec.template.metadata.labels"));
        let c = containers(dep)[0];

        // Probes on the health endpoints, on the port Sluice listens on.
        let listen_port = u64::from(w.config.server.listen.port());
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            match c.get(probe) {
                None => p(format!("no {probe}")),
                Some(pr) => {
                    if s(pr, "httpGet.path") != path {
                        p(format!("{probe} is not an httpGet on {path}"));
                    }
                    if at(pr, "httpGet.port").and_then(|port| port_of(c, port)) != Some(listen_port) {
                        p(format!("{probe} does not target the listen port {listen_port}"));
                    }
                }
            }
        }

        // Resources: requests and limits for cpu and memory, requests <= limits.
        for res in ["cpu", "memory"] {
            let req = at(c, &format!("resources.requests.{res}")).and_then(quantity);
            let lim = at(c, &format!("resources.limits.{res}")).and_then(quantity);
            match (req, lim) {
                (Some(r), Some(l)) if r <= l && r > 0.0 => {}
                (Some(_), Some(_)) => p(format!("{res} request must be > 0 and <= its limit")),
                _ => p(format!("{res} needs both a request and a limit")),
            }
        }

        // Security context (Pod Security Standard "restricted").
        if at(&pod, "securityContext.runAsNonRoot").and_then(Value::as_bool) != Some(true) {
            p("pod securityContext.runAsNonRoot is not true".into());
        }
        match at(&pod, "securityContext.runAsUser").and_then(Value::as_u64) {
            Some(0) | None => p("pod securityContext.runAsUser must be a non-zero uid".into()),
            Some(_) => {}
        }
        if s(&pod, "securityContext.seccompProfile.type") != "RuntimeDefault" {
            p("seccompProfile is not RuntimeDefault".into());
        }
        if at(c, "securityContext.readOnlyRootFilesystem").and_then(Value::as_bool) != Some(true) {
            p("readOnlyRootFilesystem is not true".into());
        }
        if at(c, "securityContext.allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false) {
            p("allowPrivilegeEscalation is not false".into());
        }
        let drops: Vec<&str> = at(c, "securityContext.capabilities.drop")
            .and_then(Value::as_sequence)
            .map(|d| d.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !drops.contains(&"ALL") {
            p("capabilities.drop does not contain ALL".into());
        }
        if at(c, "securityContext.capabilities.add").is_some() {
            p("adds capabilities".into());
        }

        // Drain budget: preStop sleep, then SIGTERM and up to
        // shutdown_grace_secs of draining, all inside the grace period.
        let pre_stop = at(c, "lifecycle.preStop.sleep.seconds").and_then(Value::as_u64);
        match pre_stop {
            None | Some(0) => p("no preStop sleep (endpoints must be removed before shutdown)".into()),
            Some(_) => {}
        }
        let grace = at(&pod, "terminationGracePeriodSeconds").and_then(Value::as_u64).unwrap_or(30);
        let need = w.config.server.shutdown_grace_secs + pre_stop.unwrap_or(0);
        if grace < need {
            p(format!(
                "terminationGracePeriodSeconds {grace} < server.shutdown_grace_secs {} + preStop {}",
                w.config.server.shutdown_grace_secs,
                pre_stop.unwrap_or(0)
            ));
        }

        // Identity: its own ServiceAccount, no API token mounted.
        let sa = s(&pod, "serviceAccountName");
        if sa.is_empty() || sa == "default" {
            p("no dedicated serviceAccountName".into());
        } else if !of_kind(docs, "ServiceAccount").iter().any(|a| name(a) == sa) {
            p(format!("ServiceAccount {sa} is not rendered"));
        }
        if at(&pod, "automountServiceAccountToken").and_then(Value::as_bool) != Some(false) {
            p("automountServiceAccountToken is not false".into());
        }

        // Secrets: every secret the config holds came from a Secret reference.
        for secret in w.config.secrets() {
            if !secret.starts_with("dummy-secret-") {
                p(format!("config secret {secret:?} is not read from a secretKeyRef"));
            }
        }

        // Writable paths: the bus directory is a mounted volume (the root
        // filesystem is read-only); an embedded bus needs a persistent one.
        let mounts = c.get("volumeMounts").and_then(Value::as_sequence).cloned().unwrap_or_default();
        let bus_mount = mounts.iter().find(|m| {
            let mp = s(m, "mountPath");
            w.config.bus.path.starts_with(mp) && m.get("readOnly").and_then(Value::as_bool) != Some(true)
        });
        let bus_volume = bus_mount
            .and_then(|m| at(&pod, "volumes")?.as_sequence()?.iter().find(|v| s(v, "name") == s(m, "name")).cloned());
        match &bus_volume {
            None => p(format!("bus.path {} is not on a writable volume", w.config.bus.path.display())),
            Some(v) if w.config.bus.kind == BusKind::Embedded && v.get("persistentVolumeClaim").is_none() => {
                p("the embedded bus is not on a PersistentVolumeClaim".into())
            }
            Some(v) => {
                if let Some(claim) = at(v, "persistentVolumeClaim.claimName").and_then(Value::as_str) {
                    if !of_kind(docs, "PersistentVolumeClaim").iter().any(|c| name(c) == claim) {
                        p(format!("PersistentVolumeClaim {claim} is not rendered"));
                    }
                }
            }
        }

        // Companions: a PDB and a NetworkPolicy select the pods.
        if !of_kind(docs, "PodDisruptionBudget")
            .iter()
            .any(|b| selects(&labels_map(at(b, "spec.selector.matchLabels")), &pod_labels))
        {
            p("no PodDisruptionBudget selects its pods".into());
        }
        if !of_kind(docs, "NetworkPolicy")
            .iter()
            .any(|np| selects(&labels_map(at(np, "spec.podSelector.matchLabels")), &pod_labels))
        {
            p("no NetworkPolicy selects its pods".into());
        }
        if !of_kind(docs, "Service").iter().any(|svc| selects(&labels_map(at(svc, "spec.selector")), &pod_labels)) {
            p("no Service selects its pods (health and metrics must be reachable)".into());
        }
        let image = s(c, "image");
        if image.ends_with(":latest") {
            p(format!("image {image} uses :latest"));
        }

        // Role-specific rules.
        let hpa = of_kind(docs, "HorizontalPodAutoscaler")
            .into_iter()
            .find(|h| s(h, "spec.scaleTargetRef.kind") == "Deployment" && s(h, "spec.scaleTargetRef.name") == n);
        let replicas = at(dep, "spec.replicas").and_then(Value::as_u64);
        match w.role.as_str() {
            "ingress" => {
                match hpa {
                    None => p("ingress has no HorizontalPodAutoscaler".into()),
                    Some(h) => {
                        let on_cpu = at(h, "spec.metrics").and_then(Value::as_sequence).is_some_and(|ms| {
                            ms.iter().any(|m| s(m, "type") == "Resource" && s(m, "resource.name") == "cpu")
                        });
                        if !on_cpu {
                            p("the ingress HPA does not scale on CPU".into());
                        }
                        if at(h, "spec.minReplicas").and_then(Value::as_u64).unwrap_or(1) < 2 {
                            p("the ingress HPA allows a single replica (no redundancy)".into());
                        }
                    }
                }
                if replicas.is_some() {
                    p("sets spec.replicas although the HPA owns it (every apply would reset it)".into());
                }
                if at(c, "resources.requests.cpu").is_none() {
                    p("CPU-based HPA needs a CPU request".into());
                }
                if w.config.bus.kind != BusKind::Kafka {
                    p("a scaled-out ingress needs the Kafka bus".into());
                }
            }
            "forward" => {
                if w.config.bus.kind != BusKind::Kafka {
                    p("a separate forwarder needs the Kafka bus".into());
                }
                let r = replicas.unwrap_or(1);
                let partitions = w.config.bus.kafka.partitions.max(0) as u64;
                if r > partitions {
                    p(format!("{r} forwarder replicas > {partitions} partitions: the extra ones sit idle"));
                }
                if hpa.is_some() {
                    p("the forwarder must not autoscale past the partition count".into());
                }
            }
            "serve" => {
                if w.config.bus.kind != BusKind::Embedded {
                    p("serve is the single-pod embedded-bus mode here".into());
                }
                if replicas != Some(1) {
                    p("an embedded bus allows exactly one replica".into());
                }
                if s(dep, "spec.strategy.type") != "Recreate" {
                    p("an embedded bus needs strategy Recreate (two pods cannot open the log)".into());
                }
                if hpa.is_some() {
                    p("an embedded-bus pod must not autoscale".into());
                }
            }
            other => p(format!("unknown role {other:?}")),
        }
    }
    problems
}

#[test]
fn workloads_have_probes_resources_security_and_a_drain_budget() {
    let Some(kubectl) = tool("kubectl") else { return };
    let mut roles_by_overlay = BTreeMap::new();
    for overlay in ["deploy/base", "deploy/overlays/dev", "deploy/overlays/production"] {
        let docs = rendered(&kubectl, overlay);
        let problems = check_workloads(&docs);
        assert!(problems.is_empty(), "{overlay}:\n  {}", problems.join("\n  "));
        let roles: BTreeSet<String> =
            of_kind(&docs, "Deployment").iter().filter_map(|d| workload(d, &docs).ok()).map(|w| w.role).collect();
        roles_by_overlay.insert(overlay, roles);
    }
    let set = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(roles_by_overlay["deploy/overlays/production"], set(&["ingress", "forward"]));
    assert_eq!(roles_by_overlay["deploy/base"], set(&["ingress", "forward"]));
    assert_eq!(roles_by_overlay["deploy/overlays/dev"], set(&["serve"]));
}

/// The checks above must be able to fail: break one thing at a time in the
/// production rendering and expect the matching complaint.
#[test]
fn the_workload_checks_catch_what_they_claim_to() {
    let Some(kubectl) = tool("kubectl") else { return };
    let base = rendered(&kubectl, "deploy/overlays/production");
    assert!(check_workloads(&base).is_empty());
    type Mutation = (&'static str, fn(&mut Value), &'static str);
    fn container(d: &mut Value) -> &mut Value {
        &mut d["spec"]["template"]["spec"]["containers"][0]
    }
    fn remove(v: &mut Value, key: &str) {
        v.as_mapping_mut().expect("mapping").remove(key).expect("key present");
    }
    let mutations: Vec<Mutation> = vec![
        (
            "sluice-ingress",
            |d| container(d)["readinessProbe"]["httpGet"]["path"] = "/healthz".into(),
            "readinessProbe is not an httpGet on /readyz",
        ),
        ("sluice-forwarder", |d| remove(container(d), "livenessProbe"), "no livenessProbe"),
        (
            "sluice-ingress",
            |d| remove(&mut container(d)["resources"]["limits"], "memory"),
            "memory needs both a request and a limit",
        ),
        (
            "sluice-ingress",
            |d| d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = false.into(),
            "runAsNonRoot is not true",
        ),
        (
            "sluice-forwarder",
            |d| container(d)["securityContext"]["readOnlyRootFilesystem"] = false.into(),
            "readOnlyRootFilesystem is not true",
        ),
        (
            "sluice-forwarder",
            |d| container(d)["securityContext"]["capabilities"]["drop"] = Value::Sequence(vec!["NET_RAW".into()]),
            "capabilities.drop does not contain ALL",
        ),
        (
            "sluice-ingress",
            |d| d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 25.into(),
            "terminationGracePeriodSeconds 25 < server.shutdown_grace_secs 25 + preStop 5",
        ),
        ("sluice-ingress", |d| remove(container(d), "lifecycle"), "no preStop sleep"),
        ("sluice-forwarder", |d| d["spec"]["replicas"] = 13.into(), "13 forwarder replicas > 12 partitions"),
        ("sluice-ingress", |d| d["spec"]["replicas"] = 3.into(), "sets spec.replicas although the HPA owns it"),
        (
            "sluice-forwarder",
            |d| {
                container(d)["env"][3] =
                    serde_yaml::from_str("{name: BREVO_API_KEY, value: xkeysib-literal}").expect("yaml")
            },
            "config secret \"xkeysib-literal\" is not read from a secretKeyRef",
        ),
        (
            "sluice-forwarder",
            |d| container(d)["env"].as_sequence_mut().expect("env").retain(|e| e["name"] != "AMPLITUDE_API_KEY"),
            "environment variable AMPLITUDE_API_KEY is not set",
        ),
        (
            "sluice-ingress",
            |d| container(d)["args"][0] = "serve".into(),
            "serve is the single-pod embedded-bus mode here",
        ),
    ];
    for (target, mutate, expected) in mutations {
        let mut docs = base.clone();
        let dep = docs.iter_mut().find(|d| kind(d) == "Deployment" && name(d) == target).expect("deployment");
        mutate(dep);
        let problems = check_workloads(&docs);
        assert!(
            problems.iter().any(|p| p.starts_with(target) && p.contains(expected)),
            "breaking {target} should report {expected:?}; got {problems:#?}"
        );
    }
    // Companions removed.
    for (k, expected) in [
        ("HorizontalPodAutoscaler", "ingress has no HorizontalPodAutoscaler"),
        ("PodDisruptionBudget", "no PodDisruptionBudget selects its pods"),
        ("NetworkPolicy", "no NetworkPolicy selects its pods"),
        ("ServiceAccount", "ServiceAccount sluice is not rendered"),
    ] {
        let docs: Vec<Value> = base.iter().filter(|d| kind(d) != k).cloned().collect();
        let problems = check_workloads(&docs);
        assert!(problems.iter().any(|p| p.contains(expected)), "removing {k}: {problems:#?}");
    }
}

/// The real binary accepts each Deployment's arguments and, with the
/// environment the pod would get, its configuration.
#[test]
fn the_binary_accepts_every_deployments_args_and_config() {
    let Some(kubectl) = tool("kubectl") else { return };
    let bin = env!("CARGO_BIN_EXE_sluice");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    for overlay in ["deploy/overlays/dev", "deploy/overlays/production"] {
        let docs = rendered(&kubectl, overlay);
        for dep in of_kind(&docs, "Deployment") {
            let w = workload(dep, &docs).unwrap_or_else(|e| panic!("{overlay} {}: {e}", name(dep)));
            run(Command::new(bin).arg(&w.role).arg("--help"));
            let file = tmp.path().join(format!("{}.yaml", name(w.dep)));
            std::fs::write(&file, &w.config_text).expect("write config");
            let out = run(Command::new(bin).env_clear().envs(&w.env).arg("check-config").arg("--config").arg(&file));
            for secret in w.config.secrets() {
                assert!(!out.contains(secret), "check-config printed a secret");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 3, "dev: serve; production: ingress + forwarder");
}

// ---------------------------------------------------------------- monitoring

fn prometheus_rule(kubectl: &Path) -> Value {
    let docs = rendered(kubectl, "deploy/overlays/production");
    let rules: Vec<&Value> = of_kind(&docs, "PrometheusRule");
    assert_eq!(rules.len(), 1, "production renders one PrometheusRule");
    rules[0].clone()
}

fn alert_rules(rule: &Value) -> Vec<Value> {
    at(rule, "spec.groups")
        .and_then(Value::as_sequence)
        .expect("spec.groups")
        .iter()
        .flat_map(|g| g.get("rules").and_then(Value::as_sequence).cloned().unwrap_or_default())
        .collect()
}

#[test]
fn prometheus_rules_pass_promtool_and_their_unit_tests() {
    let Some(kubectl) = tool("kubectl") else { return };
    let Some(promtool) = tool("promtool") else { return };
    let rule = prometheus_rule(&kubectl);
    assert_eq!(s(&rule, "apiVersion"), "monitoring.coreos.com/v1");
    let groups = at(&rule, "spec.groups").cloned().expect("spec.groups");
    let tmp = tempfile::tempdir().expect("tempdir");

    // Syntax, PromQL and annotation templates.
    let full = tmp.path().join("full.yaml");
    let mut doc = serde_yaml::Mapping::new();
    doc.insert("groups".into(), groups.clone());
    std::fs::write(&full, serde_yaml::to_string(&doc).expect("yaml")).expect("write rules");
    let out = run(Command::new(&promtool).args(["check", "rules"]).arg(&full));
    let n = alert_rules(&rule).len();
    assert!(out.contains(&format!("SUCCESS: {n} rules found")), "{out}");

    // Behaviour: the unit tests compare labels only, so annotations go.
    let mut stripped = groups;
    for g in stripped.as_sequence_mut().expect("groups") {
        for r in g["rules"].as_sequence_mut().expect("rules") {
            if let Some(m) = r.as_mapping_mut() {
                m.remove("annotations");
            }
        }
    }
    let mut doc = serde_yaml::Mapping::new();
    doc.insert("groups".into(), stripped);
    std::fs::write(tmp.path().join("rules.yaml"), serde_yaml::to_string(&doc).expect("yaml")).expect("write");
    std::fs::copy(root().join("deploy/monitoring/rules-test.yaml"), tmp.path().join("rules-test.yaml")).expect("copy");
    let out = run(Command::new(&promtool).current_dir(tmp.path()).args(["test", "rules", "rules-test.yaml"]));
    assert!(out.contains("SUCCESS"), "{out}");

    // Every alert is exercised by the unit tests.
    let tests = std::fs::read_to_string(root().join("deploy/monitoring/rules-test.yaml")).expect("rules-test");
    for r in alert_rules(&rule) {
        let alert = s(&r, "alert");
        assert!(tests.contains(&format!("alertname: {alert}\n")), "{alert} has no promtool unit test");
    }
}

#[test]
fn alerts_cover_the_issue_list_with_runbooks() {
    let Some(kubectl) = tool("kubectl") else { return };
    let rule = prometheus_rule(&kubectl);
    let rules = alert_rules(&rule);
    let names: BTreeSet<&str> = rules.iter().map(|r| s(r, "alert")).collect();
    for want in [
        "SluiceIngressErrorRatioHigh",
        "SluiceConsumerLagGrowing",
        "SluiceDeadLetters",
        "SluiceBrevoRateLimited",
        "SluiceForwarderNotDelivering",
        "SluiceNotReady",
    ] {
        assert!(names.contains(want), "missing alert {want}; have {names:?}");
    }
    for r in &rules {
        let alert = s(r, "alert");
        assert!(!alert.is_empty(), "only alerting rules here: {r:?}");
        assert!(matches!(s(r, "labels.severity"), "warning" | "critical"), "{alert}: severity");
        for a in ["summary", "description", "runbook"] {
            assert!(s(r, &format!("annotations.{a}")).trim().len() > 20, "{alert}: annotation {a} is missing or empty");
        }
        assert!(s(r, "annotations.runbook").lines().count() >= 3, "{alert}: the runbook says too little");
    }
}

#[test]
fn servicemonitor_scrapes_every_sluice_service() {
    let Some(kubectl) = tool("kubectl") else { return };
    let docs = rendered(&kubectl, "deploy/overlays/production");
    let monitors = of_kind(&docs, "ServiceMonitor");
    assert_eq!(monitors.len(), 1);
    let sm = monitors[0];
    assert_eq!(s(sm, "apiVersion"), "monitoring.coreos.com/v1");
    let selector = labels_map(at(sm, "spec.selector.matchLabels"));
    let endpoints = at(sm, "spec.endpoints").and_then(Value::as_sequence).expect("spec.endpoints");
    assert!(!endpoints.is_empty());
    let services = of_kind(&docs, "Service");
    let scraped: Vec<&&Value> =
        services.iter().filter(|svc| selects(&selector, &labels_map(at(svc, "metadata.labels")))).collect();
    let scraped_names: BTreeSet<&str> = scraped.iter().map(|s| name(s)).collect();
    assert_eq!(scraped_names, BTreeSet::from(["sluice-ingress", "sluice-forwarder"]));
    for ep in endpoints {
        assert_eq!(s(ep, "path"), "/metrics");
        let port = s(ep, "port");
        for svc in &scraped {
            let ports = at(svc, "spec.ports").and_then(Value::as_sequence).expect("ports");
            assert!(ports.iter().any(|p| s(p, "name") == port), "{} has no port named {port}", name(svc));
        }
        // Every Deployment behind those Services is covered.
    }
    for dep in of_kind(&docs, "Deployment") {
        let pod_labels = labels_map(at(dep, "spec.template.metadata.labels"));
        assert!(
            scraped.iter().any(|svc| selects(&labels_map(at(svc, "spec.selector")), &pod_labels)),
            "{} is not behind a scraped Service",
            name(dep)
        );
    }
}

// ---------------------------------------------------------------- metric names

/// Metric names defined in src/metrics.rs, and which of them are histograms.
fn defined_metrics() -> (BTreeSet<String>, BTreeSet<String>) {
    let src = std::fs::read_to_string(root().join("src/metrics.rs")).expect("src/metrics.rs");
    let mut consts = BTreeMap::new();
    for line in src.lines() {
        let Some(rest) = line.trim().strip_prefix("pub const ") else { continue };
        let Some((ident, value)) = rest.split_once(": &str = \"") else { continue };
        let Some(value) = value.strip_suffix("\";") else { continue };
        consts.insert(ident.to_string(), value.to_string());
    }
    let mut histograms = BTreeSet::new();
    for part in src.split("histogram!(").skip(1) {
        let ident: String = part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if let Some(name) = consts.get(&ident) {
            histograms.insert(name.clone());
        }
    }
    (consts.into_values().collect(), histograms)
}

/// Metric names a PromQL expression selects: identifiers outside label
/// matchers, strings and ranges that are not functions, keywords or the
/// label lists of `by`/`without`/`on`/`ignoring`/`group_*`.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    // Aggregations can take `by (...)` before their parenthesis.
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "atan2",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    let b = expr.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    let skip_ws = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        j
    };
    // Skips from an opening bracket to after its matching close, minding strings.
    let skip_group = |mut j: usize, open: u8, close: u8| {
        let mut depth = 0;
        while j < b.len() {
            match b[j] {
                q @ (b'"' | b'\'' | b'`') => {
                    j += 1;
                    while j < b.len() && b[j] != q {
                        j += if b[j] == b'\\' { 2 } else { 1 };
                    }
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return j + 1;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        j
    };
    while i < b.len() {
        let c = b[i];
        if c == b'{' {
            i = skip_group(i, b'{', b'}');
        } else if c == b'[' {
            i = skip_group(i, b'[', b']');
        } else if c == b'"' || c == b'\'' || c == b'`' {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            // Numbers and durations (15m, 1e3, 0.05).
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            let next = skip_ws(i);
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) {
                if b.get(next) == Some(&b'(') {
                    i = skip_group(next, b'(', b')');
                }
            } else if KEYWORDS.contains(&lower.as_str()) || b.get(next) == Some(&b'(') {
                // A keyword, or a function / aggregation name.
            } else {
                out.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_promql_name_extractor_finds_metrics_and_nothing_else() {
    let got = promql_metrics(
        r#"sum by (topic) (max by (topic, partition) (lag_total{topic!~"a|b{c}"})) > 1000
           and on () deriv(x_seconds_bucket[15m:1m]) > 0 or vector(0) unless up offset 5m
           / ignoring(le) group_left(pod) other:recorded"#,
    );
    let want: BTreeSet<String> =
        ["lag_total", "x_seconds_bucket", "up", "other:recorded"].iter().map(|s| s.to_string()).collect();
    assert_eq!(got, want);
}

/// Names Prometheus itself provides; every other name must be Sluice's.
const PROMETHEUS_BUILTIN: &[&str] = &["up"];

fn unknown_metrics(expr: &str, defined: &BTreeSet<String>, histograms: &BTreeSet<String>) -> Vec<String> {
    promql_metrics(expr)
        .into_iter()
        .filter(|m| {
            let series_of_histogram = ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suf| m.strip_suffix(suf).is_some_and(|base| histograms.contains(base)));
            !(defined.contains(m) || series_of_histogram || PROMETHEUS_BUILTIN.contains(&m.as_str()))
        })
        .collect()
}

fn base_name(m: &str, histograms: &BTreeSet<String>) -> String {
    for suf in ["_bucket", "_sum", "_count"] {
        if let Some(base) = m.strip_suffix(suf) {
            if histograms.contains(base) {
                return base.to_string();
            }
        }
    }
    m.to_string()
}

#[derive(Deserialize)]
struct Dashboard {
    uid: String,
    title: String,
    panels: Vec<serde_json::Value>,
    templating: serde_json::Value,
}

fn dashboard() -> Dashboard {
    let text = std::fs::read_to_string(root().join("deploy/grafana/sluice.json")).expect("dashboard");
    serde_json::from_str(&text).expect("dashboard is JSON")
}

/// (panel title, refId, expr) for every query on the dashboard.
fn dashboard_queries(d: &Dashboard) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for p in &d.panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap_or_default().to_string(),
                t["refId"].as_str().unwrap_or_default().to_string(),
                t["expr"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

/// Grafana's variables replaced by values PromQL accepts.
fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("$namespace", "sluice")
}

#[test]
fn alerts_and_dashboard_query_only_metrics_defined_in_metrics_rs() {
    let (defined, histograms) = defined_metrics();
    assert!(defined.len() > 20 && defined.contains("sluice_events_received_total"), "metrics.rs parse: {defined:?}");
    assert!(histograms.contains("sluice_http_request_duration_seconds"), "{histograms:?}");

    // Alerts (read from the source file so this test needs no tool).
    let rule: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("deploy/monitoring/prometheusrule.yaml")).expect("rule"),
    )
    .expect("rule parses");
    let mut problems = Vec::new();
    for r in alert_rules(&rule) {
        let expr = s(&r, "expr");
        assert!(!promql_metrics(expr).is_empty(), "{}: no metric found in {expr}", s(&r, "alert"));
        for m in unknown_metrics(expr, &defined, &histograms) {
            problems.push(format!("alert {}: {m}", s(&r, "alert")));
        }
    }

    // Dashboard queries and variables; and every defined metric is shown.
    let d = dashboard();
    let mut shown = BTreeSet::new();
    for (title, refid, expr) in dashboard_queries(&d) {
        assert!(!expr.is_empty(), "panel {title} {refid} has an empty query");
        for m in promql_metrics(&expr) {
            shown.insert(base_name(&m, &histograms));
        }
        for m in unknown_metrics(&expr, &defined, &histograms) {
            problems.push(format!("panel {title:?} {refid}: {m}"));
        }
    }
    for v in d.templating["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["definition"].as_str() {
            // Grafana's label_values(selector, label): only the selector is PromQL.
            let q = q
                .strip_prefix("label_values(")
                .and_then(|inner| inner.rsplit_once(',').map(|(sel, _)| sel))
                .unwrap_or(q);
            for m in unknown_metrics(q, &defined, &histograms) {
                problems.push(format!("variable {}: {m}", v["name"]));
            }
        }
    }
    assert!(problems.is_empty(), "metrics not defined in src/metrics.rs:\n  {}", problems.join("\n  "));
    let missing: Vec<&String> = defined.iter().filter(|m| !shown.contains(*m)).collect();
    assert!(missing.is_empty(), "metrics defined in src/metrics.rs but on no dashboard panel: {missing:?}");
}

#[test]
fn dashboard_is_well_formed_and_its_queries_parse() {
    let d = dashboard();
    assert_eq!(d.uid, "sluice-overview");
    assert!(!d.title.is_empty());
    let vars: Vec<&str> =
        d.templating["list"].as_array().into_iter().flatten().filter_map(|v| v["name"].as_str()).collect();
    assert!(vars.contains(&"datasource") && vars.contains(&"namespace"), "{vars:?}");
    let mut ids = BTreeSet::new();
    for p in &d.panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "duplicate panel id in {title}");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().expect("x"), g["w"].as_u64().expect("w"));
        assert!(x + w <= 24 && g["h"].as_u64().is_some_and(|h| h > 0), "{title}: gridPos {g}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}: not on the datasource variable");
        assert!(p["description"].as_str().is_some_and(|s| s.len() > 10), "{title}: no description");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let refs: BTreeSet<&str> = targets.iter().filter_map(|t| t["refId"].as_str()).collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refIds not unique");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            if !expr.contains("sluice_") {
                continue;
            }
            assert!(expr.contains("namespace=\"$namespace\""), "{title}: query ignores the namespace variable: {expr}");
        }
    }

    // promtool parses every query as a recording rule.
    let Some(promtool) = tool("promtool") else { return };
    let rules: Vec<serde_json::Value> = dashboard_queries(&d)
        .iter()
        .enumerate()
        .map(|(i, (_, _, expr))| serde_json::json!({"record": format!("sluice:dashboard_query_{i}"), "expr": grafana_to_promql(expr)}))
        .collect();
    let n = rules.len();
    let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("dashboard-rules.yaml");
    std::fs::write(&file, serde_yaml::to_string(&doc).expect("yaml")).expect("write");
    let out = run(Command::new(promtool).args(["check", "rules"]).arg(&file));
    assert!(out.contains(&format!("SUCCESS: {n} rules found")), "{out}");
}

// ---------------------------------------------------------------- image

/// Dockerfile instructions with continuation lines joined and comments gone.
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                let (ins, args) = current.split_once(' ').unwrap_or((current.as_str(), ""));
                out.push((ins.to_ascii_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

/// The exact command the image and the notes rely on.
const RELEASE_BUILD: &str = "cargo build --release --locked --bin sluice";

#[test]
fn dockerfile_builds_the_release_binary_and_runs_it_as_non_root() {
    let ins = dockerfile();
    let froms: Vec<usize> = ins.iter().enumerate().filter(|(_, (i, _))| i == "FROM").map(|(n, _)| n).collect();
    assert!(froms.len() >= 2, "multi-stage: a build stage and a runtime stage");
    let runtime_from = *froms.last().expect("FROM");
    let builds: Vec<&String> =
        ins.iter().filter(|(i, a)| i == "RUN" && a.contains("cargo build")).map(|(_, a)| a).collect();
    assert_eq!(builds.len(), 1, "one cargo build: {builds:?}");
    let cmd: Vec<&str> = builds[0].split_whitespace().collect();
    let want: Vec<&str> = RELEASE_BUILD.split_whitespace().collect();
    assert!(
        cmd.windows(want.len()).any(|w| w == want.as_slice()),
        "the build must run `{RELEASE_BUILD}`: {}",
        builds[0]
    );
    assert!(builds[0].contains("target/release/sluice"), "the release binary is what gets installed");

    // The Rust image is at least the crate's rust-version.
    let manifest: toml_lite::Manifest =
        toml_lite::parse(&std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml"));
    let rust_arg = ins
        .iter()
        .find_map(|(i, a)| (i == "ARG").then_some(a).and_then(|a| a.strip_prefix("RUST_VERSION=")))
        .expect("ARG RUST_VERSION=");
    assert!(
        version_ge(rust_arg, &manifest.rust_version),
        "RUST_VERSION {rust_arg} < rust-version {}",
        manifest.rust_version
    );
    assert!(
        manifest.bins.contains(&"sluice".to_string()),
        "Cargo.toml declares the sluice binary: {:?}",
        manifest.bins
    );

    // Runtime stage: non-root numeric user, the sluice entrypoint.
    let runtime = &ins[runtime_from..];
    let user = runtime.iter().rev().find(|(i, _)| i == "USER").map(|(_, a)| a.clone()).expect("runtime USER");
    let uid: u64 = user.split(':').next().and_then(|u| u.parse().ok()).expect("USER is a numeric uid");
    assert_ne!(uid, 0, "the image runs as root");
    let entrypoint = runtime.iter().find(|(i, _)| i == "ENTRYPOINT").map(|(_, a)| a.clone()).expect("ENTRYPOINT");
    let entry: Vec<String> = serde_json::from_str(&entrypoint).expect("ENTRYPOINT in exec form");
    assert_eq!(entry, ["/usr/local/bin/sluice"]);
    assert!(
        runtime.iter().any(|(i, a)| i == "COPY" && a.starts_with("--from=")),
        "the runtime stage copies the built binary"
    );
    let cmd = runtime.iter().find(|(i, _)| i == "CMD").map(|(_, a)| a.clone()).expect("CMD");
    let cmd: Vec<String> = serde_json::from_str(&cmd).expect("CMD in exec form");
    run(Command::new(env!("CARGO_BIN_EXE_sluice")).args(&cmd[..1]).arg("--help"));

    // Pods run as the image's user.
    let Some(kubectl) = tool("kubectl") else { return };
    for overlay in ["deploy/overlays/dev", "deploy/overlays/production"] {
        for dep in of_kind(&rendered(&kubectl, overlay), "Deployment") {
            assert_eq!(
                at(dep, "spec.template.spec.securityContext.runAsUser").and_then(Value::as_u64),
                Some(uid),
                "{overlay} {}: runAsUser differs from the image's USER",
                name(dep)
            );
        }
    }
}

#[test]
fn dockerignore_keeps_what_cargo_needs() {
    let text = std::fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore");
    let patterns: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert!(patterns.iter().any(|p| p.trim_end_matches('/') == "target"), "target/ must be ignored");
    for needed in ["src", "Cargo.toml", "Cargo.lock", "tests", "benches"] {
        assert!(
            !patterns.iter().any(|p| p.trim_end_matches('/') == needed || *p == "*" || *p == "**"),
            "{needed} must reach the build"
        );
    }
}

/// The binary links only what the runtime image provides:
/// distroless/cc's glibc and libgcc, plus zlib, which the Dockerfile copies.
#[test]
fn the_binary_needs_only_libraries_the_runtime_image_has() {
    assert_runtime_image_has_the_libraries_of(Path::new(env!("CARGO_BIN_EXE_sluice")));
}

fn assert_runtime_image_has_the_libraries_of(bin: &Path) {
    let Some(ldd) = tool("ldd") else { return };
    let out = run(Command::new(ldd).arg(bin));
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let distroless_cc = [
        "linux-vdso.so.1",
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libstdc++.so.6",
    ];
    let mut libs = Vec::new();
    for line in out.lines() {
        let lib = line.split_whitespace().next().unwrap_or_default();
        let file = lib.rsplit('/').next().unwrap_or(lib);
        if file.starts_with("ld-linux") {
            continue;
        }
        libs.push(file.to_string());
        assert!(
            distroless_cc.contains(&file) || dockerfile.contains(&format!("\"{file}\"")),
            "{file} is neither in distroless/cc nor copied by the Dockerfile:\n{out}"
        );
    }
    assert!(libs.iter().any(|l| l == "libc.so.6"), "ldd output not understood:\n{out}");
}

/// `--locked` fails when Cargo.lock is stale; check it without building.
#[test]
fn cargo_lock_is_current_for_the_locked_release_build() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .current_dir(root())
        .args(["metadata", "--locked", "--format-version", "1"])
        .stdout(std::process::Stdio::null()));
}

/// Where Cargo puts build output (`CARGO_TARGET_DIR` when set).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// The image's exact build, then that binary doing the whole job:
/// `sluice serve` on the embedded bus takes a PostHog batch, delivers it to
/// the Brevo simulator, counts it in `/metrics`, and exits 0 on SIGTERM.
/// `scripts/test` runs the same build before the suite (so nothing else
/// competes with it for the CPU); here it is then a no-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dockerfiles_release_binary_relays_posthog_events_to_brevo() {
    let in_dockerfile = dockerfile().iter().any(|(i, a)| i == "RUN" && a.contains(RELEASE_BUILD));
    assert!(in_dockerfile, "the Dockerfile no longer runs `{RELEASE_BUILD}`");
    let script = std::fs::read_to_string(root().join("scripts/test")).expect("scripts/test");
    assert!(script.contains(RELEASE_BUILD), "scripts/test must build the image's binary first: `{RELEASE_BUILD}`");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let args: Vec<&str> = RELEASE_BUILD.split_whitespace().skip(1).collect();
    // Without the variables `cargo test` sets for this process: ring's build
    // script reruns when CARGO_MANIFEST_DIR changes, which would rebuild the
    // binary scripts/test just built.
    let mut build = Command::new(&cargo);
    build.current_dir(root()).args(&args);
    let set_by_cargo_test =
        ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"];
    for (name, _) in std::env::vars_os() {
        if set_by_cargo_test.iter().any(|p| name.to_string_lossy().starts_with(p)) {
            build.env_remove(name);
        }
    }
    run(&mut build);
    let bin = target_dir().join("release/sluice");
    let version = run(Command::new(&bin).arg("--version"));
    assert_eq!(version.trim(), format!("sluice {}", env!("CARGO_PKG_VERSION")));
    assert_runtime_image_has_the_libraries_of(&bin);

    const KEY: &str = "xkeysib-release-smoke";
    let sim = sluice::sim::start(sluice::sim::SimConfig::new(KEY)).await.expect("simulator");
    let brevo = format!("brevo:\n  api_key: {KEY}\n  base_url: {}\n  linger_ms: 50\n", sim.base_url());
    let yaml = common::embedded_yaml("phc_release", "", &brevo);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sluice = common::Sluice::spawn(&bin, "serve", &yaml, dir, &[]);
    let batch: Vec<serde_json::Value> = (0..3)
        .map(|i| {
            serde_json::json!({"event": "plan upgraded", "distinct_id": format!("user-{i}"),
                "properties": {"$set": {"email": format!("user-{i}@example.com")}, "plan": "pro"}})
        })
        .collect();
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/batch/", sluice.base))
        .json(&serde_json::json!({"api_key": "phc_release", "batch": batch}))
        .send()
        .await
        .expect("post batch");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.json::<serde_json::Value>().await.expect("json"), serde_json::json!({"status": 1}));

    let delivered = sim.wait_until(std::time::Duration::from_secs(30), |s| s.accepted_events().len() >= 3).await;
    assert!(delivered, "the simulator saw {:?}; log:\n{}", sim.accepted_events(), sluice.logs());
    let mut ext_ids: Vec<String> = sim
        .accepted_events()
        .iter()
        .map(|a| {
            assert_eq!(a.event["event_name"], "plan_upgraded", "{}", a.event);
            a.event["identifiers"]["ext_id"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    ext_ids.sort();
    assert_eq!(ext_ids, ["user-0", "user-1", "user-2"]);
    let metrics = http.get(format!("{}/metrics", sluice.base)).send().await.expect("metrics");
    let metrics = metrics.text().await.expect("metrics text");
    assert!(metrics.contains("sluice_events_received_total{source=\"posthog\"} 3"), "{metrics}");

    let status = sluice.terminate(std::time::Duration::from_secs(30));
    assert!(status.success(), "exit {status}; log:\n{}", sluice.logs());
}

fn version_ge(a: &str, b: &str) -> bool {
    let parse = |v: &str| v.split('.').map(|p| p.parse::<u64>().unwrap_or(0)).collect::<Vec<_>>();
    let (mut a, mut b) = (parse(a), parse(b));
    let len = a.len().max(b.len());
    a.resize(len, 0);
    b.resize(len, 0);
    a >= b
}

/// Just enough of Cargo.toml: `rust-version` and the `[[bin]]` names.
mod toml_lite {
    pub struct Manifest {
        pub rust_version: String,
        pub bins: Vec<String>,
    }

    pub fn parse(text: &str) -> Manifest {
        let mut rust_version = String::new();
        let mut bins = Vec::new();
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_string();
                continue;
            }
            let Some((k, v)) = line.split_once('=') else { continue };
            let v = v.trim().trim_matches('"').to_string();
            match (section.as_str(), k.trim()) {
                ("[package]", "rust-version") => rust_version = v,
                ("[[bin]]", "name") => bins.push(v),
                _ => {}
            }
        }
        Manifest { rust_version, bins }
    }
}
