//! OpenAPI schemas for the domain types the DTOs reuse as they are (`TaskStatus`, `Driver`,
//! ids). The orphan rule keeps `ToSchema` off the domain's own types, so fields point here
//! with `#[schema(value_type = ...)]`; a test checks these lists match the domain's.

use utoipa::ToSchema;

/// Where a task is. `completed`, `failed` and `cancelled` are final.
#[derive(ToSchema)]
#[schema(as = TaskStatus)]
#[allow(dead_code, reason = "documentation only: the API uses cloudai_domain::TaskStatus")]
#[serde(rename_all = "lowercase")]
pub(crate) enum TaskStatusSchema {
    Pending,
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// How a task runs on a worker.
#[derive(ToSchema)]
#[schema(as = Driver)]
#[allow(dead_code, reason = "documentation only: the API uses cloudai_domain::Driver")]
#[serde(rename_all = "lowercase")]
pub(crate) enum DriverSchema {
    Docker,
    Process,
}

/// What a task's worker does with it when it loses contact with the master.
#[derive(ToSchema)]
#[schema(as = OnDisconnect)]
#[allow(dead_code, reason = "documentation only: the API uses cloudai_domain::OnDisconnect")]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnDisconnectSchema {
    /// Stopped before the master could run it elsewhere: never two copies (the default).
    Stop,
    /// Keeps running; the master waits `max_disconnect_secs` before running it elsewhere.
    Keep,
}

/// The order of a listing.
#[derive(ToSchema)]
#[schema(as = Order)]
#[allow(dead_code, reason = "documentation only: the server reads `?order=` as text")]
#[serde(rename_all = "lowercase")]
pub(crate) enum OrderSchema {
    Oldest,
    Newest,
}

#[cfg(test)]
mod tests {
    use cloudai_domain::{Driver, TaskStatus};
    use utoipa::PartialSchema;

    fn names(schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>) -> Vec<String> {
        let value = serde_json::to_value(schema).expect("schema json");
        let list = value["enum"].as_array().cloned().unwrap_or_default();
        list.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
    }

    #[test]
    fn schemas_list_the_domain_values() {
        let statuses: Vec<String> = TaskStatus::ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(names(super::TaskStatusSchema::schema()), statuses);
        let drivers: Vec<String> = [Driver::Docker, Driver::Process].iter().map(|d| d.to_string()).collect();
        assert_eq!(names(super::DriverSchema::schema()), drivers);
    }
}
