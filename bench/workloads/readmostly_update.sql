-- The writing 5% of the read-mostly workload (bench/run: -f cacheable.sql@95 -f this@5): one
-- branch's balance moves, which makes the cached reads of pgbench_branches stale.
\set bid random(1, 10)
\set delta random(-5000, 5000)
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
