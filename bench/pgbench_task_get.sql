-- db_ceiling: the SELECT Docket runs for GET /api/v1/tasks/{id} (tasks_repo_get in
-- src/services/tasks/tasks_repo.c, columns TASKS_COLS_POSTGRES in tasks_query.h), by primary
-- key, for a random task of the seeded set. bench.task_ids (loaded by run.sh after seeding)
-- numbers the seeded ids 1..ntasks; the id lookup is a sub-select of the same statement, so
-- each transaction is still one round trip with one prepared statement (it adds one
-- primary-key probe of a small table that Docket does not make).
\set n random(1, :ntasks)
SELECT t.id, t.title, t.description, t.status, t.priority, t.due_at, CAST(to_json(t.labels) AS TEXT) AS labels, t.owner_id, t.assignee_id, t.created_at, t.updated_at, t.completed_at, t.version FROM tasks.tasks t WHERE t.id = (SELECT b.id FROM bench.task_ids b WHERE b.n = :n);
