-- The floor of a server round trip: the cheapest statement PostgreSQL answers.
SELECT 1;
