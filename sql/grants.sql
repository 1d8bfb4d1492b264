-- Least-privilege accounts for cachetail.  Replace the two placeholder
-- passwords, then run as an administrator:
--   mysql -h HOST -u admin -p < sql/grants.sql
-- Narrow '%' to your application hosts or VPC range where you can.
-- On MySQL 8 and MariaDB 10.11 alike; running it again is harmless.

-- The read API only ever SELECTs.
CREATE USER IF NOT EXISTS 'cachetail_api'@'%' IDENTIFIED BY 'CHANGE_ME_API_PASSWORD';
GRANT SELECT ON cachelab.* TO 'cachetail_api'@'%';

-- The invalidator reads the binlog as a replica would (REPLICATION SLAVE),
-- checks binlog settings and positions (REPLICATION CLIENT: SHOW MASTER STATUS,
-- SHOW BINARY LOGS) and, in refresh mode, reads rows (SELECT).
CREATE USER IF NOT EXISTS 'cachetail_invalidator'@'%' IDENTIFIED BY 'CHANGE_ME_INVALIDATOR_PASSWORD';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'cachetail_invalidator'@'%';
GRANT SELECT ON cachelab.* TO 'cachetail_invalidator'@'%';
