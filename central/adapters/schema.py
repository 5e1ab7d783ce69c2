"""The central database schema as named migrations: one data model for both REST APIs.

One users table (a driver registered on the user API is a user of the operator API), one set of
stations, piles and ports (the ones the gateways report and the scheduler uses), one table of orders
(a user-API bill detail is an operator-API order). Money is stored twice: exactly, as a fraction
string that billing computed (``amount``), and as a REAL copy (``amount_num``) for SQL aggregates;
balances are integer cents. Times are ISO 8601 UTC strings unless the column name says ``_ms``.
New schema changes are new migrations appended here, never edits of applied ones.

The same migrations, by the same names and in the same order, build a PostgreSQL database: the DDL
is written once (SQLite's) and :func:`central.adapters.postgres.pg_ddl` translates it; the few
statements with no common form (triggers, a rowid-based cleanup) carry both dialects here.
"""

from __future__ import annotations

from central.adapters.database import POSTGRESQL, Db, MigrationRefused, Migrations
from central.adapters.postgres import PG_FUNCTIONS, pg_ddl

migrations = Migrations("pilegate-central")

# the operator API's permission levels (spec data dictionary); role ids 1..4 are the system roles
SYSTEM_ROLES = (
    (1, "普通用户", "普通用户角色", 1),
    (2, "VIP用户", "VIP用户角色", 2),
    (3, "管理员", "管理员角色", 3),
    (4, "超级管理员", "超级管理员角色", 4),
)

_CORE = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,   -- the user API's username = the operator API's openId
    password_hash TEXT NOT NULL,
    email TEXT, phone TEXT, nickname TEXT, avatar TEXT,
    gender INTEGER NOT NULL DEFAULT 0,
    balance_cents INTEGER NOT NULL DEFAULT 0 CHECK (balance_cents >= 0),
    status INTEGER NOT NULL DEFAULT 1,               -- 0 disabled, 1 normal
    register_time TEXT NOT NULL, last_login_time TEXT, update_time TEXT
);
CREATE TABLE roles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE, description TEXT,
    permission_level INTEGER NOT NULL CHECK (permission_level BETWEEN 1 AND 4),
    is_system INTEGER NOT NULL DEFAULT 0, create_time TEXT, update_time TEXT
);
CREATE TABLE user_roles (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role_id INTEGER NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    assigned_time TEXT, PRIMARY KEY (user_id, role_id)
);
CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,                     -- sha256 of the token (the token itself is never stored)
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL, expires_at TEXT NOT NULL, last_used_at TEXT
);
CREATE INDEX tokens_user ON tokens(user_id);
CREATE TABLE user_addresses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    recipient_name TEXT, recipient_phone TEXT, province TEXT, city TEXT, district TEXT,
    detail_address TEXT, postal_code TEXT, is_default INTEGER NOT NULL DEFAULT 0, tag TEXT,
    create_time TEXT, update_time TEXT
);
CREATE INDEX user_addresses_user ON user_addresses(user_id);
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,        -- user API type: queue_update, charging_start, charging_complete, pile_fault
    type INTEGER NOT NULL,     -- operator API type: 1 system, 2 order, 3 activity, 4 recharge
    title TEXT NOT NULL, content TEXT NOT NULL, related_id TEXT,
    is_read INTEGER NOT NULL DEFAULT 0, read_time TEXT, create_time TEXT NOT NULL
);
CREATE INDEX notifications_user ON notifications(user_id, is_read);
CREATE TABLE stations (
    id TEXT PRIMARY KEY,
    code TEXT UNIQUE,          -- the MQTT station id of pilegate/v1/{station}/...
    name TEXT NOT NULL, status INTEGER NOT NULL DEFAULT 1, address TEXT, location TEXT,
    create_time TEXT, update_time TEXT
);
CREATE TABLE piles (
    id TEXT PRIMARY KEY,
    station_id TEXT NOT NULL REFERENCES stations(id),
    pile_no TEXT NOT NULL UNIQUE,                    -- the MQTT pile id (F1, T2, ...)
    pile_type INTEGER NOT NULL CHECK (pile_type IN (1, 2)),   -- 1 DC fast, 2 AC slow
    power_rate REAL NOT NULL,                        -- kW
    manufacturer TEXT, imei TEXT, total_ports INTEGER NOT NULL DEFAULT 1,
    protocol_version TEXT, software_version TEXT, hardware_version TEXT,
    status INTEGER NOT NULL DEFAULT 0,               -- 0 offline, 1 idle, 2 in use, 3 fault
    online_status INTEGER NOT NULL DEFAULT 0,        -- 0 offline, 1 online
    in_service INTEGER NOT NULL DEFAULT 1,           -- operator switch: 0 = taken out of service
    signal_strength INTEGER, temperature REAL, last_heartbeat_time TEXT, gateway TEXT,
    installation_date TEXT, last_maintenance_date TEXT, create_time TEXT, update_time TEXT
);
CREATE TABLE ports (
    id TEXT PRIMARY KEY,
    pile_id TEXT NOT NULL REFERENCES piles(id) ON DELETE CASCADE,
    port_no TEXT NOT NULL,
    port_type INTEGER NOT NULL DEFAULT 1,            -- 1 GB, 2 EU, 3 US
    status INTEGER NOT NULL DEFAULT 0,               -- as piles.status
    fault_type INTEGER NOT NULL DEFAULT 0,
    is_disabled INTEGER NOT NULL DEFAULT 0,
    current_order_id TEXT, last_order_id TEXT,
    voltage REAL, current_ampere REAL, power REAL, temperature REAL,
    meter_wh INTEGER, electricity REAL,              -- cumulative meter (Wh, and kWh)
    total_charging_times INTEGER NOT NULL DEFAULT 0,
    total_charging_duration INTEGER NOT NULL DEFAULT 0,
    total_power_consumption REAL NOT NULL DEFAULT 0,
    last_check_time TEXT, last_telemetry_ms INTEGER, update_time TEXT,
    UNIQUE (pile_id, port_no)
);
CREATE TABLE charging_requests (
    id TEXT PRIMARY KEY,                             -- also the scheduler's car id
    user_id INTEGER NOT NULL REFERENCES users(id),
    queue_number TEXT NOT NULL,
    charging_mode TEXT NOT NULL,                     -- fast | slow
    requested_amount TEXT NOT NULL,                  -- kWh, exact
    battery_capacity REAL,
    current_status TEXT NOT NULL,                    -- waiting | charging | completed | cancelled
    bill_id TEXT, created_at TEXT NOT NULL, updated_at TEXT, finished_at TEXT
);
CREATE INDEX charging_requests_user ON charging_requests(user_id, current_status);
CREATE TABLE bills (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE REFERENCES charging_requests(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    generated_time TEXT NOT NULL,
    electricity TEXT NOT NULL, total_amount TEXT NOT NULL, duration INTEGER NOT NULL
);
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    order_no TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users(id),
    request_id TEXT REFERENCES charging_requests(id),
    bill_id TEXT REFERENCES bills(id),
    pile_id TEXT REFERENCES piles(id) ON DELETE SET NULL,
    port_id TEXT REFERENCES ports(id) ON DELETE SET NULL,
    pile_no TEXT, port_no TEXT,
    status INTEGER NOT NULL DEFAULT 1,               -- 0 to pay, 1 charging, 2 done, 3 cancelled, 4 abnormal
    billing_mode INTEGER NOT NULL DEFAULT 1,  -- 0 time, 1 energy + energy service, 2 energy + time service
    start_time TEXT, end_time TEXT, duration INTEGER NOT NULL DEFAULT 0,
    electricity TEXT NOT NULL DEFAULT '0', electricity_num REAL NOT NULL DEFAULT 0,
    amount TEXT NOT NULL DEFAULT '0', amount_num REAL NOT NULL DEFAULT 0,
    service_fee TEXT NOT NULL DEFAULT '0', service_fee_num REAL NOT NULL DEFAULT 0,
    total_amount TEXT NOT NULL DEFAULT '0', total_amount_num REAL NOT NULL DEFAULT 0,
    detail TEXT,                                     -- the billing detail record (JSON)
    start_meter_wh INTEGER, end_meter_wh INTEGER,
    payment_status INTEGER NOT NULL DEFAULT 0, payment_time TEXT, payment_method INTEGER,
    transaction_id TEXT, generated_time TEXT, create_time TEXT NOT NULL, update_time TEXT
);
CREATE INDEX orders_user ON orders(user_id, create_time);
CREATE INDEX orders_pile ON orders(pile_id, create_time);
CREATE INDEX orders_status ON orders(status, create_time);
CREATE INDEX orders_created ON orders(create_time);
CREATE INDEX orders_bill ON orders(bill_id);
CREATE TABLE params (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT);
CREATE TABLE scheduler_state (
    id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE TABLE live_sessions (
    car TEXT PRIMARY KEY REFERENCES charging_requests(id),
    pile_no TEXT NOT NULL, port INTEGER NOT NULL, order_id TEXT,
    command_id TEXT, started_ms INTEGER, start_meter_wh INTEGER,
    last_ms INTEGER, last_meter_wh INTEGER, samples TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE commands (
    id TEXT PRIMARY KEY, pile_no TEXT NOT NULL, port INTEGER NOT NULL, op TEXT NOT NULL,
    params TEXT NOT NULL, car TEXT, status TEXT NOT NULL, reason TEXT, attempt INTEGER NOT NULL,
    created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL, updated_ms INTEGER
);
CREATE TABLE telemetry (
    pile_no TEXT NOT NULL, port INTEGER NOT NULL, ts INTEGER NOT NULL,
    session INTEGER NOT NULL, seq INTEGER NOT NULL, state TEXT NOT NULL,
    voltage_v REAL, current_a REAL, power_w REAL, energy_wh INTEGER NOT NULL,
    temperature_c REAL, fault TEXT, replayed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX telemetry_port_ts ON telemetry(pile_no, port, ts);
"""


@migrations(name="0001_core")
def core(db: Db) -> None:
    """Every table of both APIs and the live service, and the four system roles."""
    postgresql = db.dialect == POSTGRESQL
    if postgresql:
        for statement in PG_FUNCTIONS:
            db.execute(statement)
    for statement in _CORE.split(";"):  # not executescript(): it would commit mid-migration
        if statement.strip():
            db.execute(pg_ddl(statement) if postgresql else statement)
    for role_id, name, description, level in SYSTEM_ROLES:
        db.execute(
            "INSERT INTO roles (id, name, description, permission_level, is_system) VALUES (?, ?, ?, ?, 1)",
            [role_id, name, description, level],
        )
    if postgresql:  # ids given explicitly leave the identity behind them
        db.execute("SELECT setval(pg_get_serial_sequence('roles', 'id'), (SELECT MAX(id) FROM roles))")


# --- operator orders: their own migration set (its name is recorded in databases already) ----------

ORDER_MIGRATIONS = Migrations("pilegate-operator-orders")


@ORDER_MIGRATIONS(name="0001_order_indexes")
def order_indexes(db: Db) -> None:
    """Indexes for the operator API's order pages: newest first by start time, per filter."""
    for statement in (
        "CREATE INDEX IF NOT EXISTS orders_start ON orders(start_time)",
        "CREATE INDEX IF NOT EXISTS orders_user_start ON orders(user_id, start_time)",
        "CREATE INDEX IF NOT EXISTS orders_pile_start ON orders(pile_id, start_time)",
        "CREATE INDEX IF NOT EXISTS orders_status_start ON orders(status, start_time)",
        "CREATE INDEX IF NOT EXISTS orders_pile_no_start ON orders(pile_no, start_time)",
        "CREATE INDEX IF NOT EXISTS piles_station ON piles(station_id)",
    ):
        db.execute(statement)


_COUNT_TRIGGERS_SQLITE = (
    "CREATE TABLE order_counts (status INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
    "INSERT INTO order_counts (status, n) SELECT status, COUNT(*) FROM orders GROUP BY status",
    "CREATE TRIGGER order_counts_insert AFTER INSERT ON orders BEGIN "
    "INSERT INTO order_counts (status, n) VALUES (NEW.status, 1) "
    "ON CONFLICT (status) DO UPDATE SET n = n + 1; END",
    "CREATE TRIGGER order_counts_delete AFTER DELETE ON orders BEGIN "
    "UPDATE order_counts SET n = n - 1 WHERE status = OLD.status; END",
    "CREATE TRIGGER order_counts_status AFTER UPDATE OF status ON orders "
    "WHEN OLD.status IS NOT NEW.status BEGIN "
    "UPDATE order_counts SET n = n - 1 WHERE status = OLD.status; "
    "INSERT INTO order_counts (status, n) VALUES (NEW.status, 1) "
    "ON CONFLICT (status) DO UPDATE SET n = n + 1; END",
)


_COUNT_TRIGGERS_POSTGRESQL = (
    "CREATE TABLE order_counts (status BIGINT PRIMARY KEY, n BIGINT NOT NULL)",
    "INSERT INTO order_counts (status, n) SELECT status, COUNT(*) FROM orders GROUP BY status",
    "CREATE FUNCTION order_counts_keep() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF TG_OP IN ('DELETE', 'UPDATE') THEN "
    "UPDATE order_counts SET n = n - 1 WHERE status = OLD.status; END IF; "
    "IF TG_OP IN ('INSERT', 'UPDATE') THEN "
    "INSERT INTO order_counts (status, n) VALUES (NEW.status, 1) "
    "ON CONFLICT (status) DO UPDATE SET n = order_counts.n + 1; END IF; "
    "RETURN NULL; END $$",
    "CREATE TRIGGER order_counts_insert AFTER INSERT OR DELETE ON orders "
    "FOR EACH ROW EXECUTE FUNCTION order_counts_keep()",
    "CREATE TRIGGER order_counts_status AFTER UPDATE OF status ON orders "
    "FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION order_counts_keep()",
)


@ORDER_MIGRATIONS(name="0002_order_counts")
def order_counts(db: Db) -> None:
    """Orders per status, kept by triggers: the unfiltered (or status-only) page count is O(1)."""
    for statement in _COUNT_TRIGGERS_POSTGRESQL if db.dialect == POSTGRESQL else _COUNT_TRIGGERS_SQLITE:
        db.execute(statement)


# --- payments that prove themselves ----------------------------------------------------------------


@migrations(name="0002_payment_proof")
def payment_proof(db: Db) -> None:
    """A provider transaction id pays one order only, and an operator's confirmation names them.

    Ids already used more than once (before this rule) keep their first use; every later use is
    renamed ``<id>#reused:<order id>`` so the unique index can exist and an operator can find them.
    """
    db.execute(  # both engines have a rowid on orders (PostgreSQL's is a column: see pg_ddl)
        "UPDATE orders SET transaction_id = transaction_id || '#reused:' || id "
        "WHERE transaction_id IS NOT NULL AND rowid NOT IN "
        "(SELECT MIN(rowid) FROM orders WHERE transaction_id IS NOT NULL GROUP BY transaction_id)"
    )
    db.execute("CREATE UNIQUE INDEX orders_transaction ON orders(transaction_id)")
    column = "ALTER TABLE orders ADD COLUMN payment_confirmed_by INTEGER REFERENCES users(id)"
    db.execute(pg_ddl(column) if db.dialect == POSTGRESQL else column)


# --- several stations per central --------------------------------------------------------------------

DEFAULT_STATION = "station1"  # `[central] station` when the configuration names none
STATION_TABLES = ("charging_requests", "bills", "orders", "live_sessions", "commands", "telemetry")
"""Tables whose rows get a ``station`` column (the station's code, its MQTT ``{station}``)."""

_PILES_BY_STATION = """
CREATE TABLE piles_by_station (
    id TEXT PRIMARY KEY,
    station_id TEXT NOT NULL REFERENCES stations(id),
    station TEXT NOT NULL,                           -- the code of the station that runs it
    pile_no TEXT NOT NULL,                           -- the MQTT pile id (F1, T2, ...), unique per station
    pile_type INTEGER NOT NULL CHECK (pile_type IN (1, 2)),   -- 1 DC fast, 2 AC slow
    power_rate REAL NOT NULL,                        -- kW
    manufacturer TEXT, imei TEXT, total_ports INTEGER NOT NULL DEFAULT 1,
    protocol_version TEXT, software_version TEXT, hardware_version TEXT,
    status INTEGER NOT NULL DEFAULT 0,               -- 0 offline, 1 idle, 2 in use, 3 fault
    online_status INTEGER NOT NULL DEFAULT 0,        -- 0 offline, 1 online
    in_service INTEGER NOT NULL DEFAULT 1,           -- operator switch: 0 = taken out of service
    signal_strength INTEGER, temperature REAL, last_heartbeat_time TEXT, gateway TEXT,
    installation_date TEXT, last_maintenance_date TEXT, create_time TEXT, update_time TEXT,
    UNIQUE (station, pile_no)
)"""
_PILE_COLUMNS = (
    "id, station_id, pile_no, pile_type, power_rate, manufacturer, imei, total_ports, protocol_version, "
    "software_version, hardware_version, status, online_status, in_service, signal_strength, temperature, "
    "last_heartbeat_time, gateway, installation_date, last_maintenance_date, create_time, update_time"
)


def existing_station(db: Db) -> str:
    """The code of the station a single-station database ran (the first station record with a code:
    the one ``[central] station`` created), else :data:`DEFAULT_STATION`."""
    row = db.execute("SELECT code FROM stations WHERE code IS NOT NULL ORDER BY rowid LIMIT 1").fetchone()
    return str(row[0]) if row is not None else DEFAULT_STATION


def _rebuild_keyed(db: Db, table: str, ddl: str, copy: str) -> None:
    """Replace ``table`` (referenced by no other table) by ``ddl`` (creating ``<table>_new``),
    filled by ``copy``."""
    postgresql = db.dialect == POSTGRESQL
    db.execute(pg_ddl(ddl) if postgresql else ddl)
    db.execute(copy)
    db.execute(f"DROP TABLE {table}")
    db.execute(f"ALTER TABLE {table}_new RENAME TO {table}")


@migrations(name="0003_stations", rebuilds=True)
def several_stations(db: Db) -> None:
    """Rows carry the station (its code) they belong to: one central runs several stations.

    Piles are unique per (station, pile_no); parameters (and the clock anchor) and the scheduler's
    state are kept per station; requests, bills, orders, live sessions, commands and telemetry name
    their station. What a database holds already belongs to the station it ran
    (:func:`existing_station`): the new columns default to that code, so even a large telemetry
    table is not rewritten.
    """
    postgresql = db.dialect == POSTGRESQL
    code = existing_station(db)  # a topic id (protocols.topics.check_id): safe inside quotes
    for table in STATION_TABLES:
        column = f"ALTER TABLE {table} ADD COLUMN station TEXT NOT NULL DEFAULT '{code}'"
        db.execute(pg_ddl(column) if postgresql else column)
    if postgresql:
        db.execute(f"ALTER TABLE piles ADD COLUMN station TEXT NOT NULL DEFAULT '{code}'")
        db.execute("ALTER TABLE piles DROP CONSTRAINT IF EXISTS piles_pile_no_key")
        db.execute("ALTER TABLE piles ADD CONSTRAINT piles_station_pile_no UNIQUE (station, pile_no)")
    else:  # an inline UNIQUE cannot be dropped on SQLite: the table is rebuilt (foreign keys off)
        db.execute(_PILES_BY_STATION)
        db.execute(
            f"INSERT INTO piles_by_station ({_PILE_COLUMNS}, station) "  # noqa: S608 - constants
            f"SELECT {_PILE_COLUMNS}, ? FROM piles",
            [code],
        )
        db.execute("DROP TABLE piles")
        db.execute("ALTER TABLE piles_by_station RENAME TO piles")
    db.execute("CREATE INDEX IF NOT EXISTS piles_station ON piles(station_id)")
    _rebuild_keyed(
        db,
        "params",
        "CREATE TABLE params_new (station TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, "
        "updated_at TEXT, PRIMARY KEY (station, key))",
        f"INSERT INTO params_new (station, key, value, updated_at) "  # noqa: S608
        f"SELECT '{code}', key, value, updated_at FROM params",
    )
    _rebuild_keyed(
        db,
        "scheduler_state",
        "CREATE TABLE scheduler_state_new (station TEXT PRIMARY KEY, state TEXT NOT NULL, "
        "updated_at TEXT NOT NULL)",
        f"INSERT INTO scheduler_state_new (station, state, updated_at) "  # noqa: S608
        f"SELECT '{code}', state, updated_at FROM scheduler_state",
    )
    for statement in (
        "CREATE INDEX orders_station_start ON orders(station, start_time)",
        "CREATE INDEX charging_requests_station ON charging_requests(station, current_status)",
    ):
        db.execute(pg_ddl(statement) if postgresql else statement)


@migrations(name="0004_live_rows_fillfactor")
def live_rows_fillfactor(db: Db) -> None:
    """PostgreSQL: leave half of each page of ``ports`` and ``piles`` free. Ingest rewrites the
    live fields of a station's ports and piles with every write (tens a second); PostgreSQL writes
    a new version of each row, and with room in its page the version stays there without new
    index entries (a HOT update) and the old one is pruned on a later visit. In full pages every
    version went elsewhere: the tables grew by a station's ports per write until autovacuum came
    by (a minute: 14 MB for 1,000 ports in 7 s of the ingest bench), and each write scanned and
    indexed more. SQLite updates rows in place: nothing to do there."""
    if db.dialect == POSTGRESQL:
        for table in ("ports", "piles"):
            db.execute(f"ALTER TABLE {table} SET (fillfactor = 50)")


ONE_ACTIVE_REQUEST = "charging_requests_one_active"


class ActiveRequestsClash(MigrationRefused):
    """A database holds drivers with more than one active request: the migration that forbids it
    cannot be applied until they are settled."""


@migrations(name="0005_one_active_request_per_driver")
def one_active_request_per_driver(db: Db) -> None:
    """A driver has at most one request waiting or charging, across every station, whichever
    central instance takes it. Each station's service checks this in memory and the API checks the
    other stations first, but two submits at the same moment to different stations (or to two
    central instances) could both pass a check that is only a read; the database now refuses the
    second (see ``central/adapters/charging.py``). A database that already holds such drivers
    (possible only with several stations) is named in the refusal, to be settled first."""
    clashes = db.execute(
        "SELECT user_id, COUNT(*) FROM charging_requests WHERE current_status IN ('waiting', 'charging') "
        "GROUP BY user_id HAVING COUNT(*) > 1 ORDER BY user_id LIMIT 10"
    ).fetchall()
    if clashes:
        who = ", ".join(f"user {row[0]} ({row[1]} requests)" for row in clashes)
        raise ActiveRequestsClash(
            f"drivers with more than one waiting or charging request: {who}; settle the extra ones "
            "(their charging_requests rows' current_status to 'cancelled') and start again"
        )
    db.execute(
        f"CREATE UNIQUE INDEX {ONE_ACTIVE_REQUEST} ON charging_requests(user_id) "
        "WHERE current_status IN ('waiting', 'charging')"
    )
