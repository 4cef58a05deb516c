-- The cacheable read workload: two read-only statements whose results repeat.
-- 10 distinct keys (one per branch at scale 10), so once a cache is warm every statement is a hit.
--   1. a point lookup of a branch by a random bid in 1..10 (cheap for PostgreSQL);
--   2. an aggregate over 10,000 rows of pgbench_accounts (an index range scan, ~1-2 ms of
--      PostgreSQL time: the kind of query a result cache exists for).
-- Reads only; the TPC-B workload that writes these tables runs after it.
\set bid random(1, 10)
SELECT bid, bbalance FROM pgbench_branches WHERE bid = :bid;
SELECT count(*), sum(abalance), avg(abalance) FROM pgbench_accounts WHERE aid BETWEEN (:bid - 1) * 100000 + 1 AND (:bid - 1) * 100000 + 10000;
