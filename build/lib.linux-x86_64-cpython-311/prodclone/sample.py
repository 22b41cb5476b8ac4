"""A realistic sample "production" database full of fake PII, for the demo,
tests and benchmarks: a shop/SaaS schema with users, addresses, products,
orders, payments, support tickets, a partitioned events table, an enum, a
domain, arrays, jsonb, tsvector, bytea, a self-FK, a view and UNIQUE emails.

Values come from seeded Faker pools, so a given (seed, scale) is identical
every time and millions of rows generate quickly."""

from __future__ import annotations

import datetime as dt
import json
import random

from faker import Faker
from psycopg import sql

from prodclone.db import connect, dbname_of, with_dbname
from prodclone.errors import ProdcloneError
from prodclone.marker import ADMIN_DB

SCHEMA = """
CREATE TYPE order_status AS ENUM ('pending', 'paid', 'shipped', 'cancelled', 'refunded');
CREATE DOMAIN email_address AS text CHECK (VALUE LIKE '%_@_%');
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email email_address NOT NULL UNIQUE,
    first_name text NOT NULL,
    last_name text NOT NULL,
    phone text,
    date_of_birth date,
    password_hash text NOT NULL,
    last_login_ip inet,
    profile jsonb NOT NULL DEFAULT '{}',
    tags text[] NOT NULL DEFAULT '{}',
    avatar bytea,
    search tsvector,
    referred_by bigint REFERENCES users(id),
    is_test_account boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE addresses (
    id serial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    street text NOT NULL,
    city text NOT NULL,
    postcode text NOT NULL,
    country char(2) NOT NULL,
    is_default boolean NOT NULL DEFAULT false
);
CREATE TABLE products (
    id serial PRIMARY KEY,
    sku text NOT NULL UNIQUE,
    name text NOT NULL,
    description text,
    price numeric(10, 2) NOT NULL CHECK (price >= 0)
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users(id),
    shipping_address_id int REFERENCES addresses(id),
    customer_email email_address NOT NULL,
    status order_status NOT NULL,
    total numeric(12, 2) NOT NULL,
    placed_at timestamptz NOT NULL
);
CREATE INDEX orders_user_idx ON orders(user_id);
CREATE TABLE order_items (
    order_id bigint NOT NULL REFERENCES orders(id),
    product_id int NOT NULL REFERENCES products(id),
    quantity int NOT NULL,
    unit_price numeric(10, 2) NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
CREATE TABLE payments (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders(id),
    provider_ref text NOT NULL UNIQUE,
    card_number text,
    cardholder_name text,
    amount numeric(12, 2) NOT NULL,
    paid_at timestamptz NOT NULL
);
CREATE TABLE support_tickets (
    id bigserial PRIMARY KEY,
    user_id bigint REFERENCES users(id),
    subject text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE events (
    id bigserial,
    user_id bigint REFERENCES users(id),
    kind text NOT NULL,
    payload jsonb,
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE VIEW customer_order_totals AS
    SELECT u.id AS user_id, count(o.id) AS orders, coalesce(sum(o.total), 0) AS spent
      FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.id;
"""


def _pool(fake: Faker, fn: str, n: int, **kw) -> list[str]:
    return [str(getattr(fake, fn)(**kw)) for _ in range(n)]


def _esc(v) -> str:
    if v is None:
        return "\\N"
    s = str(v)
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy(conn, table: str, cols: list[str], rows) -> int:
    n = 0
    query = sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols)))
    with conn.cursor().copy(query) as copy:
        buf = []
        for r in rows:
            buf.append("\t".join(_esc(v) for v in r))
            n += 1
            if len(buf) >= 5000:
                copy.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            copy.write("\n".join(buf) + "\n")
    return n


def create_sample_database(dsn: str, users: int = 1000, seed: int = 42, replace: bool = False) -> dict:
    """Create the database named in ``dsn`` (replacing it if asked) and fill it.
    Returns row counts per table."""
    name = dbname_of(dsn)
    admin = connect(with_dbname(dsn, ADMIN_DB), role="sample target", autocommit=True)
    try:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and not replace:
            raise ProdcloneError(f"database {name!r} exists; pass --replace to rebuild it")
        if exists:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name)))
    finally:
        admin.close()
    with connect(dsn, role="sample target") as conn:
        conn.execute(SCHEMA)
        counts = _fill(conn, users, seed)
        conn.execute("SELECT setval('users_id_seq', %s)", (users,))
        conn.execute("SELECT setval('orders_id_seq', (SELECT max(id) FROM orders))")
        conn.execute("SELECT setval('payments_id_seq', (SELECT max(id) FROM payments))")
        conn.execute("SELECT setval('support_tickets_id_seq', (SELECT greatest(max(id), 1) FROM support_tickets))")
        conn.execute("SELECT setval('events_id_seq', (SELECT max(id) FROM events))")
        conn.commit()
    with connect(dsn, role="sample target", autocommit=True) as conn:
        conn.execute("ANALYZE")
    return counts


def _fill(conn, users: int, seed: int) -> dict:
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rnd = random.Random(seed)
    P = 2000
    firsts, lasts = _pool(fake, "first_name", P), _pool(fake, "last_name", P)
    phones, streets = _pool(fake, "phone_number", P), _pool(fake, "street_address", P)
    cities, postcodes = _pool(fake, "city", P), _pool(fake, "postcode", P)
    ips, sentences = _pool(fake, "ipv4", P), _pool(fake, "sentence", P)
    domains = ["gmail.com", "yahoo.com", "outlook.com", "proton.me", "icloud.com", "acme-corp.io"]
    base_day = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    counts = {}

    def user_email(i: int) -> str:
        return f"{firsts[i % P].lower()}.{lasts[(i * 7) % P].lower()}{i}@{domains[i % len(domains)]}"

    def user_rows():
        for i in range(1, users + 1):
            f, last = firsts[rnd.randrange(P)], lasts[rnd.randrange(P)]
            profile = {"display_name": f"{f} {last}", "phone": phones[rnd.randrange(P)],
                       "newsletter": rnd.random() < 0.3, "theme": rnd.choice(["dark", "light"]),
                       "address": {"city": cities[rnd.randrange(P)], "zip": postcodes[rnd.randrange(P)]}}
            yield (i, user_email(i), f, last, phones[rnd.randrange(P)] if rnd.random() < 0.8 else None,
                   (dt.date(1950, 1, 1) + dt.timedelta(days=rnd.randrange(20000))).isoformat() if rnd.random() < 0.7 else None,
                   f"$2b$12${fake.pystr(min_chars=53, max_chars=53)}" if i <= P else f"$2b$12$h{i:052d}",
                   ips[rnd.randrange(P)] if rnd.random() < 0.9 else None, json.dumps(profile),
                   "{" + ",".join(rnd.sample(["vip", "beta", "churn-risk", "b2b", "newsletter"], rnd.randrange(3))) + "}",
                   "\\x" + rnd.randbytes(8).hex() if rnd.random() < 0.2 else None,
                   None, rnd.randrange(1, i) if i > 10 and rnd.random() < 0.1 else None,
                   i <= max(3, users // 500), (base_day + dt.timedelta(minutes=rnd.randrange(1_000_000))).isoformat())

    counts["users"] = _copy(conn, "users", ["id", "email", "first_name", "last_name", "phone", "date_of_birth",
                                            "password_hash", "last_login_ip", "profile", "tags", "avatar", "search",
                                            "referred_by", "is_test_account", "created_at"], user_rows())
    conn.execute("UPDATE users SET search = to_tsvector('simple', first_name || ' ' || last_name) WHERE id % 10 = 0")
    n_addr = int(users * 1.3)
    counts["addresses"] = _copy(conn, "addresses", ["id", "user_id", "street", "city", "postcode", "country", "is_default"], (
        (i, (i - 1) % users + 1, streets[rnd.randrange(P)], cities[rnd.randrange(P)], postcodes[rnd.randrange(P)],
         rnd.choice(["US", "US", "US", "CA", "GB", "DE"]), i <= users) for i in range(1, n_addr + 1)))
    n_products = max(50, users // 20)
    counts["products"] = _copy(conn, "products", ["id", "sku", "name", "description", "price"], (
        (i, f"SKU-{i:07d}", f"{fake.color_name()} {fake.word()} {i}", sentences[rnd.randrange(P)],
         f"{rnd.randrange(100, 50000) / 100:.2f}") for i in range(1, n_products + 1)))
    n_orders = users * 2
    statuses = ["pending", "paid", "paid", "shipped", "shipped", "shipped", "cancelled", "refunded"]
    order_user = [rnd.randrange(1, users + 1) for _ in range(n_orders)]
    counts["orders"] = _copy(conn, "orders", ["id", "user_id", "shipping_address_id", "customer_email", "status", "total", "placed_at"], (
        (i, u, u if rnd.random() < 0.9 else None, user_email(u), rnd.choice(statuses),
         f"{rnd.randrange(500, 200000) / 100:.2f}", (base_day + dt.timedelta(minutes=rnd.randrange(1_400_000))).isoformat())
        for i, u in enumerate(order_user, start=1)))

    def items():
        for o in range(1, n_orders + 1):
            for p in rnd.sample(range(1, n_products + 1), rnd.randrange(1, 5)):
                yield (o, p, rnd.randrange(1, 4), f"{rnd.randrange(100, 50000) / 100:.2f}")

    counts["order_items"] = _copy(conn, "order_items", ["order_id", "product_id", "quantity", "unit_price"], items())
    counts["payments"] = _copy(conn, "payments", ["id", "order_id", "provider_ref", "card_number", "cardholder_name", "amount", "paid_at"], (
        (o, o, f"ch_{rnd.getrandbits(64):016x}{o}", f"4{rnd.randrange(10**14, 10**15)}" if rnd.random() < 0.7 else None,
         f"{firsts[rnd.randrange(P)]} {lasts[rnd.randrange(P)]}", f"{rnd.randrange(500, 200000) / 100:.2f}",
         (base_day + dt.timedelta(minutes=rnd.randrange(1_400_000))).isoformat())
        for o in range(1, n_orders + 1) if rnd.random() < 0.85))
    n_tickets = max(10, users // 5)

    def tickets():
        for i in range(1, n_tickets + 1):
            u = rnd.randrange(1, users + 1)
            body = (f"Hi, this is {firsts[rnd.randrange(P)]}. {sentences[rnd.randrange(P)]} "
                    f"Please reach me at {user_email(u)} or {phones[rnd.randrange(P)]}.\nThanks!")
            yield (i, u, sentences[rnd.randrange(P)][:60], body, (base_day + dt.timedelta(minutes=rnd.randrange(1_400_000))).isoformat())

    counts["support_tickets"] = _copy(conn, "support_tickets", ["id", "user_id", "subject", "body", "created_at"], tickets())
    kinds = ["login", "view", "add_to_cart", "checkout", "logout"]
    counts["events"] = _copy(conn, "events", ["id", "user_id", "kind", "payload", "occurred_at"], (
        (i, rnd.randrange(1, users + 1), rnd.choice(kinds),
         json.dumps({"ip": ips[rnd.randrange(P)], "path": f"/p/{rnd.randrange(1000)}"}),
         (base_day + dt.timedelta(minutes=rnd.randrange(1_500_000))).isoformat()) for i in range(1, users * 3 + 1)))
    return counts
