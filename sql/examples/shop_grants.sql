-- Least-privilege accounts for cachetail in front of the example shop (the same
-- two accounts as sql/grants.sql).  Replace the two placeholder passwords, then
-- run as an administrator after sql/examples/shop.sql:
--   mysql -h HOST -u admin -p < sql/examples/shop_grants.sql
-- An account that exists already keeps its password.  Narrow '%' to your
-- application hosts or VPC range where you can.  On MySQL 8 and MariaDB 10.11
-- alike; running it again is harmless.  `cachetail check` prints the same grants
-- table by table for any declaration.

-- The read API only ever SELECTs.
CREATE USER IF NOT EXISTS 'cachetail_api'@'%' IDENTIFIED BY 'CHANGE_ME_API_PASSWORD';
GRANT SELECT ON shop.* TO 'cachetail_api'@'%';

-- The invalidator reads the binlog as a replica would (REPLICATION SLAVE),
-- checks binlog settings and positions (REPLICATION CLIENT) and reads the
-- declared tables' columns and, in refresh mode, their rows (SELECT).
CREATE USER IF NOT EXISTS 'cachetail_invalidator'@'%' IDENTIFIED BY 'CHANGE_ME_INVALIDATOR_PASSWORD';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'cachetail_invalidator'@'%';
GRANT SELECT ON shop.* TO 'cachetail_invalidator'@'%';
