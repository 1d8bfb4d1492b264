-- cachetail's second schema: a small shop, declared in examples/shop.toml.
--   mysql -h HOST -u admin -p < sql/examples/shop.sql
--   mysql -h HOST -u admin -p < sql/examples/shop_grants.sql   (placeholders replaced)
-- Runs unchanged on MySQL 8 and MariaDB 10.11 and is safe to run again, as
-- sql/init_db.sql is: tables are created only if missing and the sample rows
-- are inserted by fixed key with INSERT IGNORE, so a second run adds nothing and
-- changes nothing.  The rows are computed from their number alone (no RAND(),
-- no NOW()), so every server holds the same data.
--
-- What it exercises:
--   customers    keyed by a VARCHAR code under utf8mb4_unicode_ci: /customers/c00042
--                finds C00042 and /customers/cafe finds CAFÉ (the collation trap);
--                listed by country, a CHAR(2) under the same collation, where some
--                rows spell 'de' for 'DE'
--   orders       keyed by (customer_id, order_id); listed by customer and status,
--                a VARCHAR under utf8mb4_unicode_ci where some rows spell 'Shipped'
--   order_lines  listed by order and status, paged (40 orders have 120 lines)
--   gift_cards   keyed by a BINARY(16) UUID
-- and DECIMAL, FLOAT, DATE, DATETIME(3), TIMESTAMP(3), ENUM, SET, BIT, JSON,
-- ascii columns, NULLs and emoji in the served columns.
--
-- JSON columns are LONGTEXT with a JSON_VALID check: that is MariaDB's JSON type
-- (cachetail serves it as a JSON value); MySQL 8's binary JSON type cannot be
-- served, so on MySQL the same column is text holding JSON (served as a string).

SET NAMES utf8mb4;
CREATE DATABASE IF NOT EXISTS shop CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE shop;

-- TIMESTAMPs are stored and served in UTC.
SET time_zone = '+00:00';

CREATE TABLE IF NOT EXISTS customers (
    id            INT UNSIGNED  NOT NULL,
    code          VARCHAR(32)   CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    name          VARCHAR(100)  NOT NULL,
    email         VARCHAR(190)  NULL,
    country       CHAR(2)       CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    tier          ENUM('standard', 'silver', 'gold') NOT NULL DEFAULT 'standard',
    tags          SET('newsletter', 'wholesale', 'vip', 'beta') NOT NULL DEFAULT '',
    balance       DECIMAL(12,2) NOT NULL DEFAULT 0.00,
    preferences   LONGTEXT      CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL CHECK (JSON_VALID(preferences)),
    password_hash BINARY(32)    NULL,
    created_at    DATETIME(3)   NOT NULL,
    updated_at    TIMESTAMP(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    UNIQUE KEY uq_customers_code (code),
    KEY idx_customers_country (country)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS orders (
    customer_id INT UNSIGNED    NOT NULL,
    order_id    BIGINT UNSIGNED NOT NULL,
    status      VARCHAR(16)     CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    placed_at   DATETIME(3)     NOT NULL,
    shipped_at  TIMESTAMP(3)    NULL DEFAULT NULL,
    total       DECIMAL(12,2)   NOT NULL,
    currency    CHAR(3)         CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    note        VARCHAR(500)    NULL,
    shipping    LONGTEXT        CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL CHECK (JSON_VALID(shipping)),
    updated_at  TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (customer_id, order_id),
    UNIQUE KEY uq_orders_order_id (order_id),
    KEY idx_orders_status (status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS order_lines (
    order_id     BIGINT UNSIGNED   NOT NULL,
    line_no      SMALLINT UNSIGNED NOT NULL,
    sku          VARCHAR(32)       CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
    title        VARCHAR(200)      NOT NULL,
    quantity     SMALLINT UNSIGNED NOT NULL,
    unit_price   DECIMAL(10,2)     NOT NULL,
    discount_pct DECIMAL(5,2)      NULL,
    weight_kg    FLOAT             NULL,
    status       VARCHAR(12)       CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    options      SET('gift-wrap', 'express', 'fragile') NOT NULL DEFAULT '',
    updated_at   TIMESTAMP(3)      NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (order_id, line_no),
    KEY idx_order_lines_status (status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS gift_cards (
    id            BINARY(16)    NOT NULL,
    customer_id   INT UNSIGNED  NULL,
    initial_value DECIMAL(10,2) NOT NULL,
    balance       DECIMAL(10,2) NOT NULL,
    currency      CHAR(3)       CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    state         ENUM('active', 'redeemed', 'void') NOT NULL,
    flags         BIT(8)        NOT NULL DEFAULT b'0',
    message       VARCHAR(200)  NULL,
    issued_at     DATETIME(3)   NOT NULL,
    expires_on    DATE          NULL,
    updated_at    TIMESTAMP(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    KEY idx_gift_cards_customer (customer_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- 500 customers, C00001..C00500, n = 1..500 from three digit columns.
INSERT IGNORE INTO customers (id, code, name, email, country, tier, tags, balance, preferences,
                              password_hash, created_at, updated_at)
SELECT n,
       CONCAT('C', LPAD(n, 5, '0')),
       CONCAT(ELT(1 + (n % 10), 'Ada', 'Zoë', 'Søren', 'Aiko', 'Chioma', 'Mateo', 'Ingrid',
                  'Raj', 'Léa', 'Omar'),
              ' ',
              ELT(1 + ((n DIV 10) % 8), 'Okafor', 'Nakamura', 'Ørsted', 'García', 'Müller',
                  'Dubois', 'Kowalski', 'Lindqvist'),
              IF(n % 25 = 0, ' 🦊', '')),
       IF(n % 9 = 0, NULL, CONCAT('customer', n, '@shop.example')),
       -- some rows spell the country in lower case: the same variant under the collation
       IF(n % 50 = 7, 'de',
          ELT(1 + (n % 8), 'DE', 'FR', 'GB', 'US', 'NL', 'SE', 'JP', 'BR')),
       ELT(1 + (n % 3), 'standard', 'silver', 'gold'),
       ELT(1 + (n % 6), '', 'newsletter', 'newsletter,vip', 'wholesale', 'beta', 'newsletter,wholesale,beta'),
       CAST((n * 7919 % 100000) / 100 AS DECIMAL(12,2)),
       IF(n % 4 = 0, NULL,
          CONCAT('{"locale":"', ELT(1 + (n % 4), 'en-GB', 'de-DE', 'fr-FR', 'ja-JP'),
                 '","newsletter":', IF(n % 2 = 0, 'true', 'false'),
                 ',"sizes":[', n % 5, ',', 36 + n % 10, ']}')),
       IF(n % 3 = 0, NULL, UNHEX(SHA2(CONCAT('customer-', n), 256))),
       TIMESTAMP('2023-01-01 00:00:00') + INTERVAL n HOUR + INTERVAL (n * 7 % 1000) * 1000 MICROSECOND,
       TIMESTAMP('2024-01-01 00:00:00') + INTERVAL n MINUTE + INTERVAL (n * 13 % 1000) * 1000 MICROSECOND
FROM (
    SELECT d0.d + 10 * d1.d + 100 * d2.d + 1 AS n
    FROM (SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) d0
    CROSS JOIN (SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) d1
    CROSS JOIN (SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4) d2
) AS seq
ORDER BY n;

-- Three customers whose codes other spellings find: /customers/cafe finds CAFÉ,
-- /customers/zoe-01 finds Zoë-01, /customers/angstrom finds ÅNGSTRÖM.
INSERT IGNORE INTO customers (id, code, name, email, country, tier, tags, balance, preferences,
                              password_hash, created_at, updated_at)
VALUES
    (501, 'CAFÉ', 'Café Ünïcode ☕', 'cafe@shop.example', 'FR', 'gold', 'vip', 1234.50,
     '{"locale":"fr-FR","newsletter":true,"note":"déjà vu 🥐"}', NULL,
     '2023-06-01 12:00:00.125', '2024-02-01 08:00:00.500'),
    (502, 'Zoë-01', 'Zoë Ørsted', NULL, 'se', 'silver', '', 0.00, NULL, NULL,
     '2023-06-02 12:00:00.000', '2024-02-02 08:00:00.000'),
    (503, 'ÅNGSTRÖM', 'Anders Ångström', 'angstrom@shop.example', 'SE', 'standard',
     'newsletter,beta', -12.75, '{}', NULL, '2023-06-03 12:00:00.999', '2024-02-03 08:00:00.001');

-- 2,000 orders, order_id 100001..102000 (never a customer id), customer 1..500.
INSERT IGNORE INTO orders (customer_id, order_id, status, placed_at, shipped_at, total, currency,
                           note, shipping, updated_at)
SELECT 1 + (n * 37 % 500),
       100000 + n,
       -- some rows spell 'Shipped': the same variant as 'shipped' under the collation
       IF(n % 97 = 0, 'Shipped',
          ELT(1 + (n % 5), 'pending', 'paid', 'shipped', 'delivered', 'cancelled')),
       TIMESTAMP('2024-01-01 00:00:00') + INTERVAL n * 17 MINUTE + INTERVAL (n * 31 % 1000) * 1000 MICROSECOND,
       IF(n % 5 IN (2, 3) OR n % 97 = 0,
          TIMESTAMP('2024-01-03 00:00:00') + INTERVAL n * 17 MINUTE + INTERVAL (n * 11 % 1000) * 1000 MICROSECOND,
          NULL),
       CAST((n * 4099 % 250000) / 100 + 5 AS DECIMAL(12,2)),
       ELT(1 + (n % 3), 'EUR', 'GBP', 'USD'),
       CASE n % 7 WHEN 0 THEN 'Leave it at the door 📦' WHEN 3 THEN 'Gift — please no invoice'
                  ELSE NULL END,
       IF(n % 5 = 4, NULL,
          CONCAT('{"method":"', ELT(1 + (n % 3), 'standard', 'express', 'pickup'),
                 '","parcels":', 1 + n % 3, ',"insured":', IF(n % 2 = 1, 'true', 'false'), '}')),
       TIMESTAMP('2024-01-05 00:00:00') + INTERVAL n * 17 MINUTE
FROM (
    SELECT d0.d + 10 * d1.d + 100 * d2.d + 1000 * d3.d + 1 AS n
    FROM (SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) d0
    CROSS JOIN (SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) d1
    CROSS JOIN (SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) d2
    CROSS JOIN (SELECT 0 AS d UNION ALL SELECT 1) d3
) AS seq
ORDER BY n;

-- Order lines: 1 to 5 per order, and 120 for every 50th order (more than one page).
INSERT IGNORE INTO order_lines (order_id, line_no, sku, title, quantity, unit_price, discount_pct,
                                weight_kg, status, options, updated_at)
SELECT o.order_id,
       l.n,
       CONCAT('SKU-', LPAD((o.order_id * 7 + l.n * 13) % 1000, 4, '0')),
       CONCAT(ELT(1 + (l.n % 6), 'Teapot', 'Notebook', 'Umbrella', 'Headphones', 'Candle', 'Mug'),
              ' ', ELT(1 + (o.order_id % 4), 'blue', 'grün', 'rouge', '藍'),
              IF((o.order_id + l.n) % 11 = 0, ' ✨', '')),
       1 + (o.order_id + l.n) % 4,
       CAST(((o.order_id * 31 + l.n * 17) % 9900 + 100) / 100 AS DECIMAL(10,2)),
       IF(l.n % 4 = 0, CAST((l.n % 3) * 5 + 2.5 AS DECIMAL(5,2)), NULL),
       IF(l.n % 5 = 0, NULL, ((o.order_id + l.n) % 40 + 1) / 8),
       -- some rows spell 'Packed': the same variant as 'packed' under the collation
       IF((o.order_id + l.n) % 89 = 0, 'Packed',
          ELT(1 + ((o.order_id + l.n) % 4), 'open', 'packed', 'shipped', 'returned')),
       ELT(1 + (l.n % 4), '', 'gift-wrap', 'express', 'gift-wrap,fragile'),
       TIMESTAMP('2024-01-05 00:00:00') + INTERVAL (o.order_id - 100000) * 17 MINUTE + INTERVAL l.n SECOND
FROM orders AS o
JOIN (
    SELECT d0.d + 10 * d1.d + 100 * d2.d + 1 AS n
    FROM (SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) d0
    CROSS JOIN (SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) d1
    CROSS JOIN (SELECT 0 AS d UNION ALL SELECT 1) d2
) AS l ON l.n <= IF(o.order_id % 50 = 0, 120, 1 + o.order_id % 5)
WHERE o.order_id BETWEEN 100001 AND 102000
ORDER BY o.order_id, l.n;

-- 200 gift cards keyed by UUIDs 5ca1ab1e-0000-4000-8000-000000000001 ... (hex 0xc8 = 200).
INSERT IGNORE INTO gift_cards (id, customer_id, initial_value, balance, currency, state, flags,
                               message, issued_at, expires_on, updated_at)
SELECT UNHEX(CONCAT('5ca1ab1e000040008000', LPAD(HEX(n), 12, '0'))),
       IF(n % 7 = 0, NULL, 1 + (n * 13 % 500)),
       CAST(ELT(1 + (n % 4), 10, 25, 50, 100) AS DECIMAL(10,2)),
       CAST(ELT(1 + (n % 4), 10, 25, 50, 100) * (n % 5) / 4 AS DECIMAL(10,2)),
       ELT(1 + (n % 3), 'EUR', 'GBP', 'USD'),
       IF(n % 5 = 0, 'redeemed', IF(n % 23 = 0, 'void', 'active')),
       n % 256,
       CASE n % 6 WHEN 0 THEN 'Happy birthday 🎂' WHEN 1 THEN 'Merci beaucoup !' WHEN 2 THEN NULL
                  WHEN 3 THEN 'おめでとう' ELSE '' END,
       TIMESTAMP('2023-11-01 00:00:00') + INTERVAL n * 5 HOUR + INTERVAL (n * 3 % 1000) * 1000 MICROSECOND,
       IF(n % 4 = 0, NULL, DATE('2025-01-01') + INTERVAL n DAY),
       TIMESTAMP('2024-02-01 00:00:00') + INTERVAL n MINUTE
FROM (
    SELECT d0.d + 10 * d1.d + 100 * d2.d + 1 AS n
    FROM (SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) d0
    CROSS JOIN (SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) d1
    CROSS JOIN (SELECT 0 AS d UNION ALL SELECT 1) d2
) AS seq
ORDER BY n;
