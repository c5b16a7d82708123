//! deploy/firewall-daemonset.yaml: the Kubernetes manifest parses, runs the
//! controller the way the systemd unit does (host network, only CAP_BPF,
//! CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_RESOURCE, the host's bpffs), and its
//! ConfigMap holds a policy that `firewall check` accepts, with `[fleet]`.

use serde::Deserialize;
use serde_yaml::Value;

fn manifest() -> Vec<Value> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/firewall-daemonset.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/firewall-daemonset.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .collect()
}

fn kind<'a>(docs: &'a [Value], k: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == k)
        .unwrap_or_else(|| panic!("no {k} in the manifest"))
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn the_daemonset_runs_the_controller_with_least_privilege() {
    let docs = manifest();
    let ds = kind(&docs, "DaemonSet");
    assert_eq!(ds["apiVersion"], "apps/v1");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(
        spec["hostNetwork"], true,
        "XDP attaches to the node's interface"
    );
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    assert_ne!(sc["privileged"], true);
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    let mut add = strs(&sc["capabilities"]["add"]);
    add.sort_unstable();
    assert_eq!(add, ["BPF", "NET_ADMIN", "PERFMON", "SYS_RESOURCE"]);
    let args = strs(&c["args"]);
    assert_eq!(args.first(), Some(&"run"));
    let config = args
        .iter()
        .position(|a| *a == "--config")
        .map(|i| args[i + 1])
        .expect("--config");

    // Volumes: the host's bpffs at /sys/fs/bpf, the policy from the ConfigMap.
    let volumes = spec["volumes"].as_sequence().unwrap();
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap();
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let bpf = mounts
        .iter()
        .find(|m| m["mountPath"] == "/sys/fs/bpf")
        .expect("bpffs mount");
    let bpf_vol = volume(bpf["name"].as_str().unwrap());
    assert_eq!(bpf_vol["hostPath"]["path"], "/sys/fs/bpf");
    let policy_mount = mounts
        .iter()
        .find(|m| config.starts_with(m["mountPath"].as_str().unwrap()) && m["mountPath"] != "/")
        .expect("the --config file is on a mounted volume");
    let cm_name = volume(policy_mount["name"].as_str().unwrap())["configMap"]["name"]
        .as_str()
        .expect("the policy comes from a ConfigMap");
    let file = config
        .strip_prefix(policy_mount["mountPath"].as_str().unwrap())
        .unwrap()
        .trim_start_matches('/');

    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == cm_name)
        .expect("the ConfigMap the DaemonSet mounts");
    let toml = cm["data"][file]
        .as_str()
        .expect("the policy file in the ConfigMap");
    let (policy, _) = firewall_user::policy::parse(toml)
        .unwrap_or_else(|p| panic!("the ConfigMap's policy does not check: {p:?}"));
    let fleet = policy.fleet.expect("[fleet] in the example policy");
    assert!(fleet.creds.is_some(), "the example authenticates to NATS");
    let creds_dir = fleet
        .creds
        .unwrap()
        .parent()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let creds_mount = mounts
        .iter()
        .find(|m| m["mountPath"] == creds_dir.as_str())
        .expect("the credentials file is mounted");
    assert!(volume(creds_mount["name"].as_str().unwrap())["secret"]["secretName"].is_string());
}
