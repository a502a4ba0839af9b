//! What a task's container looks like: command, environment, limits, labels, and
//! the safe defaults every task container gets.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};

use crate::driver::Launch;

pub(super) const LABEL_TASK_ID: &str = "cloudai.task_id";
pub(super) const LABEL_ATTEMPT: &str = "cloudai.attempt";
pub(super) const LABEL_WORKER_ID: &str = "cloudai.worker_id";

/// Every capability is dropped, then these few that ordinary programs expect are added back.
const CAPABILITIES: [&str; 7] =
    ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "KILL", "NET_BIND_SERVICE"];

/// `cloudai-<task id>-<attempt>`, with characters Docker refuses in names replaced.
pub(super) fn container_name(launch: &Launch) -> String {
    let task: String = launch
        .task_id
        .as_str()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '_' })
        .collect();
    format!("cloudai-{task}-{}", launch.attempt)
}

pub(super) fn container_body(launch: &Launch) -> ContainerCreateBody {
    let mut env: Vec<String> = launch.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("CLOUDAI_TASK_ID={}", launch.task_id));
    let mut device_requests = None;
    if !launch.gpu_indices.is_empty() {
        // The NVIDIA runtime numbers the container's GPUs from 0, so CUDA_VISIBLE_DEVICES is not set.
        env.push(format!("NVIDIA_VISIBLE_DEVICES={}", launch.cuda_visible_devices()));
        device_requests = Some(vec![DeviceRequest {
            driver: Some("nvidia".to_owned()),
            device_ids: Some(launch.gpu_indices.iter().map(u32::to_string).collect()),
            capabilities: Some(vec![vec!["gpu".to_owned()]]),
            ..Default::default()
        }]);
    }
    let labels = HashMap::from([
        (LABEL_TASK_ID.to_owned(), launch.task_id.as_str().to_owned()),
        (LABEL_ATTEMPT.to_owned(), launch.attempt.to_string()),
        (LABEL_WORKER_ID.to_owned(), launch.worker_id.clone()),
    ]);
    let memory = (launch.memory_required_mb > 0)
        .then(|| i64::try_from(launch.memory_required_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX));
    let nano_cpus = (launch.cpu_required > 0.0).then(|| (launch.cpu_required * 1e9).round() as i64);
    let host_config = HostConfig {
        nano_cpus,
        memory,
        // Equal to the memory limit: no swap, so going over the limit is an OOM kill.
        memory_swap: memory,
        privileged: Some(false),
        network_mode: Some("bridge".to_owned()),
        cap_drop: Some(vec!["ALL".to_owned()]),
        cap_add: Some(CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()),
        security_opt: Some(vec!["no-new-privileges".to_owned()]),
        device_requests,
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(launch.image.clone()),
        // Empty: the image's own command.
        cmd: (!launch.command.is_empty()).then(|| launch.command.clone()),
        env: Some(env),
        labels: Some(labels),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cloudai_domain::TaskId;

    use super::*;

    fn launch() -> Launch {
        Launch {
            task_id: TaskId::parse("t-1").expect("task id"),
            worker_id: "w1".to_owned(),
            attempt: 2,
            image: "busybox".to_owned(),
            command: Vec::new(),
            env: BTreeMap::from([("A".to_owned(), "1".to_owned())]),
            gpu_indices: vec![1, 3],
            cpu_required: 1.5,
            memory_required_mb: 64,
            workdir: "/tmp".into(),
        }
    }

    #[test]
    fn limits_labels_and_safe_defaults() {
        let body = container_body(&launch());
        assert_eq!(body.cmd, None);
        let env = body.env.unwrap_or_default();
        assert!(env.contains(&"A=1".to_owned()));
        assert!(env.contains(&"CLOUDAI_TASK_ID=t-1".to_owned()));
        assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=1,3".to_owned()));
        let labels = body.labels.unwrap_or_default();
        assert_eq!(labels.get(LABEL_ATTEMPT).map(String::as_str), Some("2"));
        assert_eq!(labels.get(LABEL_WORKER_ID).map(String::as_str), Some("w1"));
        let host = body.host_config.unwrap_or_default();
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.memory_swap, host.memory);
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        let gpus = host.device_requests.unwrap_or_default();
        assert_eq!(gpus[0].device_ids, Some(vec!["1".to_owned(), "3".to_owned()]));
    }

    #[test]
    fn names_are_docker_safe() {
        let mut launch = launch();
        launch.task_id = TaskId::parse("a b/c").unwrap_or(launch.task_id);
        let name = container_name(&launch);
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')), "{name}");
    }
}
