//! The Grafana dashboard (`dashboards/firewall.json`) and the alerting rules
//! (`dashboards/alerts.yml`) only use metrics a running daemon really
//! exports: every metric name is parsed out of their PromQL expressions and
//! looked up in a scrape of `firewall run`'s /metrics.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use serde_json::Value;
use testkit::{
    e2e::{policy_file, scrape, sock},
    send_udp, FirewallDaemon, Sandbox, UdpSink,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[derive(Debug, PartialEq)]
enum Tok {
    Ident(String),
    Punct(char),
    Other,
}

fn tokens(expr: &str) -> Vec<Tok> {
    let c: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let word = |ch: char| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':';
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '#' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '"' || ch == '\'' || ch == '`' {
            i += 1;
            while i < c.len() && c[i] != ch {
                if c[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push(Tok::Other);
        } else if ch == '$' {
            // A Grafana variable: $x, ${x}, $__rate_interval.
            i += 1;
            while i < c.len() && (word(c[i]) || c[i] == '{' || c[i] == '}') {
                i += 1;
            }
            out.push(Tok::Other);
        } else if ch.is_ascii_digit()
            || (ch == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < c.len() && (word(c[i]) || c[i] == '.') {
                i += 1;
            }
            out.push(Tok::Other);
        } else if word(ch) {
            let start = i;
            while i < c.len() && word(c[i]) {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else {
            out.push(Tok::Punct(ch));
            i += 1;
        }
    }
    out
}

/// The metric names in a PromQL expression: identifiers outside label
/// matchers `{...}` and ranges `[...]` that are not functions or
/// aggregations (followed by `(`, `by` or `without`), keywords, or label
/// lists of by/without/on/ignoring/group_*.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];
    let t = tokens(expr);
    let mut names = BTreeSet::new();
    let (mut brace, mut bracket) = (0i32, 0i32);
    let mut i = 0;
    while i < t.len() {
        match &t[i] {
            Tok::Punct('{') => brace += 1,
            Tok::Punct('}') => brace -= 1,
            Tok::Punct('[') => bracket += 1,
            Tok::Punct(']') => bracket -= 1,
            Tok::Ident(id) if brace == 0 && bracket == 0 => {
                // `sum(...)`, and `sum by (l) (...)`: aggregations.
                let next_paren = match t.get(i + 1) {
                    Some(Tok::Punct('(')) => true,
                    Some(Tok::Ident(k)) => k == "by" || k == "without",
                    _ => false,
                };
                let lower = id.to_ascii_lowercase();
                if LABEL_LISTS.contains(&lower.as_str()) {
                    if next_paren {
                        while i < t.len() && t[i] != Tok::Punct(')') {
                            i += 1;
                        }
                    }
                } else if !next_paren && !KEYWORDS.contains(&lower.as_str()) {
                    names.insert(id.clone());
                }
            }
            _ => {}
        }
        i += 1;
    }
    names
}

/// Names in a Grafana variable query: `label_values(METRIC_EXPR, label)`
/// uses its first argument; other queries are PromQL.
fn grafana_query_names(q: &str) -> BTreeSet<String> {
    let q = q.trim();
    if let Some(inner) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return match inner.rsplit_once(',') {
            Some((metric, _label)) => metric_names(metric),
            None => BTreeSet::new(),
        };
    }
    metric_names(q)
}

#[test]
fn the_parser_finds_metric_names_only() {
    let e = r#"sum by (verdict) (rate(firewall_packets_total{instance=~"$instance",verdict!="x"}[$__rate_interval])) / on (instance) group_left (mode) max(firewall_attached) > bool 0.5 unless foo:bar offset 5m"#;
    let want: BTreeSet<String> = ["firewall_packets_total", "firewall_attached", "foo:bar"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(metric_names(e), want);
    assert_eq!(
        grafana_query_names("label_values(firewall_policy_reloads_total, instance)"),
        ["firewall_policy_reloads_total".to_string()].into()
    );
    assert!(metric_names("8 * 1e-9 + .5").is_empty());
}

/// Every PromQL expression of the dashboard (panel targets) and the names
/// its variable queries use.
fn dashboard_names(d: &Value) -> (Vec<String>, BTreeSet<String>) {
    fn walk(v: &Value, exprs: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "expr" {
                        exprs.push(x.as_str().expect("expr is a string").to_string());
                    } else {
                        walk(x, exprs);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, exprs)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(&d["panels"], &mut exprs);
    let mut names: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    for var in d["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            let q = var["query"]["query"]
                .as_str()
                .or(var["query"].as_str())
                .expect("query variable with a query");
            names.extend(grafana_query_names(q));
        }
    }
    (exprs, names)
}

fn alert_rules() -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(repo().join("dashboards/alerts.yml")).unwrap();
    let y: serde_yaml::Value = serde_yaml::from_str(&text).expect("alerts.yml is YAML");
    let mut rules = Vec::new();
    for g in y["groups"].as_sequence().expect("groups") {
        assert!(g["name"].as_str().is_some(), "group without a name");
        rules.extend(g["rules"].as_sequence().expect("rules").iter().cloned());
    }
    rules
}

/// Metric names in a Prometheus text / OpenMetrics exposition: samples, and
/// the families announced by `# TYPE` (a counter family `x` has samples
/// `x_total`).
fn exported(body: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (w.next(), w.next()) {
                out.insert(name.to_string());
                if kind == "counter" && !name.ends_with("_total") {
                    out.insert(format!("{name}_total"));
                }
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() && !line.starts_with("HTTP/") {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            if name.starts_with("firewall_") {
                out.insert(name.to_string());
            }
        }
    }
    out
}

/// Series Prometheus itself adds to every scrape target (not the daemon's).
fn prometheus_own(name: &str) -> bool {
    name == "up" || name.starts_with("scrape_")
}

#[test]
fn dashboard_is_importable_grafana_json() {
    let text = std::fs::read_to_string(repo().join("dashboards/firewall.json")).unwrap();
    let d: Value = serde_json::from_str(&text).expect("firewall.json is JSON");
    assert!(d["title"].is_string() && d["uid"].is_string());
    assert!(d["id"].is_null(), "an importable dashboard has no id");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 30);
    // The data source is a variable, so the file imports as is.
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter().any(|v| v["type"] == "datasource"
            && v["query"] == "prometheus"
            && v["name"] == "datasource"),
        "no prometheus datasource variable"
    );
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        assert!(p["title"].is_string());
        for k in ["x", "y", "w", "h"] {
            assert!(
                p["gridPos"][k].is_u64(),
                "{} has no gridPos.{k}",
                p["title"]
            );
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${datasource}");
            assert!(!t["expr"].as_str().unwrap().is_empty());
        }
    }
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in [
        "Packets/s by verdict",
        "Bits/s by verdict",
        "Drop ratio",
        "Tracked sources vs capacity",
        "Blocklist entries by origin",
        "Auto-bans",
        "Policy reloads",
        "Attached interfaces",
    ] {
        assert!(titles.contains(&want), "no panel {want}: {titles:?}");
    }
    let (exprs, _) = dashboard_names(&d);
    assert!(exprs
        .iter()
        .any(|e| e.contains("rate(firewall_packets_total{")));
}

#[test]
fn alert_rules_are_complete() {
    let rules = alert_rules();
    let names: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    for want in [
        "FirewallPolicyReloadFailed",
        "FirewallSourceTableNearCapacity",
        "FirewallNotAttached",
        "FirewallControllerDown",
        "FirewallFloodGuardRefusing",
    ] {
        assert!(names.contains(&want), "no alert {want}: {names:?}");
    }
    for r in &rules {
        let name = r["alert"].as_str().expect("every rule is an alert");
        assert!(
            r["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
            "{name}: expr"
        );
        assert!(
            r["labels"]["severity"].as_str().is_some(),
            "{name}: severity"
        );
        assert!(
            r["annotations"]["summary"].as_str().is_some(),
            "{name}: summary"
        );
        assert!(
            r["annotations"]["description"].as_str().is_some(),
            "{name}: description"
        );
    }
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    if !testkit::privileged("dashboard_and_alerts_use_only_exported_metrics") {
        return;
    }
    let text = std::fs::read_to_string(repo().join("dashboards/firewall.json")).unwrap();
    let d: Value = serde_json::from_str(&text).unwrap();
    let (_, dash) = dashboard_names(&d);
    let mut alerts = BTreeSet::new();
    for r in alert_rules() {
        alerts.extend(metric_names(r["expr"].as_str().unwrap()));
    }
    println!("dashboard metrics: {dash:?}\nalert metrics: {alerts:?}");
    assert!(dash.contains("firewall_packets_total") && dash.len() >= 8);

    // A real daemon, with a rule, a blocklist entry and some traffic, so
    // that every family has samples; [crowdsec] (its LAPI unreachable) makes
    // the crowdsec series exported.
    let sb = Sandbox::new().unwrap();
    let policy = policy_file(
        "block = [\"203.0.113.0/24\"]\n[defaults]\nrate = 50\nburst = 10\n[[rule]]\nname = \"dns\"\nprotocol = \"udp\"\ndst_port = 53\nrate = 10\nburst = 10\n[autoban]\ndrops = 100\nwindow = \"5s\"\nban = \"1m\"\nmax_ban = \"1h\"\n[crowdsec]\nlapi_url = \"http://127.0.0.1:1\"\napi_key_file = \"/nonexistent/crowdsec.key\"\n\
         [fleet]\nservers = [\"nats://127.0.0.1:4\"]\nname = \"dash\"\n",
    );
    let fw = FirewallDaemon::on(&sb.gw_ns)
        .iface(&sb.gw_attacker_if)
        .config(&policy)
        .metrics(9477)
        .start();
    let _sink = UdpSink::bind(&sb.gw_path(), sock("0.0.0.0", 9000));
    send_udp(
        &sb.attacker_path(),
        None,
        sock("198.51.100.1", 9000),
        1000,
        std::time::Duration::from_millis(500),
    );
    send_udp(
        &sb.attacker_path(),
        None,
        sock("198.51.100.1", 53),
        100,
        std::time::Duration::from_millis(200),
    );
    let _ = fw.wait_for_event(std::time::Duration::from_secs(5), |e| e["event"] == "ban");
    let body = scrape(&sb.gw_path(), 9477);
    let have = exported(&body);
    println!("exported: {have:?}");
    let mut missing = Vec::new();
    for (file, names) in [
        ("dashboards/firewall.json", &dash),
        ("dashboards/alerts.yml", &alerts),
    ] {
        for n in names {
            if !prometheus_own(n) && !have.contains(n) {
                missing.push(format!("{file}: {n}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics the daemon does not export:\n  {}\n--- /metrics ---\n{body}",
        missing.join("\n  ")
    );
    // And the samples the main panels plot are there, with their labels.
    for series in [
        "firewall_packets_total{verdict=\"rate_limited\"}",
        "firewall_rule_packets_total{rule=\"dns\",verdict=\"passed\"}",
        "firewall_blocklist_entries{origin=\"config\"}",
        "firewall_policy_reloads_total{result=\"error\"}",
    ] {
        assert!(
            testkit::e2e::sample(&body, series).is_some(),
            "no sample {series}:\n{body}"
        );
    }
    assert!(
        body.contains(&format!(
            "firewall_attached{{iface=\"{}\",mode=\"",
            sb.gw_attacker_if
        )),
        "{body}"
    );
}

/// `promtool check rules` when promtool is installed (the `prometheus`
/// Debian package has it): the rules parse, and so does every dashboard
/// expression, checked as recording rules with Grafana's variables
/// replaced by values.
#[test]
fn promtool_accepts_the_rules_and_the_dashboard_queries() {
    let have = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("SKIP promtool_accepts_the_rules_and_the_dashboard_queries: promtool is not installed (apt-get install prometheus)");
        return;
    }
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(repo().join("dashboards/alerts.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(repo().join("dashboards/firewall.json")).unwrap();
    let d: Value = serde_json::from_str(&text).unwrap();
    let (exprs, _) = dashboard_names(&d);
    let mut y = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$instance", ".*");
        y.push_str(&format!(
            "      - record: dashboard:expr{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let f = std::env::temp_dir().join(format!("fw-dash-rules-{}.yml", std::process::id()));
    std::fs::write(&f, y).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&f)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&f);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
