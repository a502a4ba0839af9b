-- Listings page by (created_at_ms, task_id): a cursor that is a task, a total order.
DROP INDEX IF EXISTS tasks_by_created;
DROP INDEX IF EXISTS tasks_by_status;
DROP INDEX IF EXISTS tasks_by_worker;
CREATE INDEX tasks_by_created ON tasks (created_at_ms, task_id);
CREATE INDEX tasks_by_status ON tasks (status, created_at_ms, task_id);
CREATE INDEX tasks_by_worker ON tasks (worker_id, created_at_ms, task_id);
