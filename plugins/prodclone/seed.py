"""Load an export into the base Postgres: into a staging database first, then
swap it in, so a failed seed leaves the previous base untouched.

Only an export whose verification passed is loaded (the manifest's ``verified``
record, see export.verify_and_record), unless forced.

Order: pre-data schema, data (COPY, checksums verified while streaming),
post-data (indexes, constraints, FKs, triggers: built after the load is
faster and checks every FK), sequence values, materialized views refreshed,
ANALYZE, then the swap.

Every one of those steps can run code from the production schema, which is
not trusted: CHECK constraints, domain checks and generated columns during
COPY (as the session's role), index expressions, FK checks, materialized views
and ANALYZE (as the table's owner; autovacuum later too). So none of them
runs as the base role. Each base has an **owner role** of its own
(``prodclone_owner_<hash of the base's name>``, see ``owner_role``): marked,
with no attribute at all, a member of nothing. Seed logs in *as* that role
(see prodclone.roles) to fill the staging database, so it owns everything
inside: production's code runs with its rights, which reach no other
database and cannot create roles or databases. The base role owns the
database itself and is a member of the owner role, so it can hand the objects
to a clone's role. prodclone never drops an owner role: every seed of the
base reuses it, and Postgres refuses to drop it while any base, snapshot or
clone still holds an object it owns.

Seed replaces only a database marked as the base of that very name: never the
registry, a snapshot, a clone or anything prodclone did not create. Its work
names are ``<base>__staging`` and ``<base>__previous``; a seed killed at any
step leaves only those (or the base closed to connections), and the next seed
repairs or removes them before it starts (``_repair``).
"""

from __future__ import annotations

import graphlib
import hashlib
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from prodclone import datafile, faults, marker, roles
from prodclone.catalog import qualified_name, split_qualified
from prodclone.db import catalog_only, connect, dbname_of, drop_database, with_dbname
from prodclone.errors import ConnectionFailed, ProdcloneError, SeedError
from prodclone.export import manifest_digest, read_manifest
from prodclone.marker import ADMIN_DB, SYSTEM_DBS
from prodclone.marker import MARKER as MARKER  # re-exported: drivers.postgres marks with it
from prodclone.storage import StorageTarget, open_storage

log = logging.getLogger(__name__)

STAGING, PREVIOUS = "__staging", "__previous"
OWNER_PREFIX = "prodclone_owner_"
FIRST_USER_OID = 16384  # Postgres's FirstNormalObjectId: every object template0 lacks has an oid >= this


@dataclass
class SeedResult:
    database: str
    tables: int
    rows: int
    seconds: float
    replaced_previous: bool
    verified: bool = True  # False: an unverified export was loaded with force_unverified


def _check_name(base: str) -> None:
    """Refuse names seed cannot work with before doing anything: Postgres would silently truncate a work name
    past 63 bytes, so ``<base>__previous`` could become the base itself."""
    if base in SYSTEM_DBS:
        raise SeedError(f"refusing to seed into {base!r}: name a dedicated base database in the target DSN")
    if not marker.ident_fits(base, PREVIOUS):  # the longer of the two work names
        raise SeedError(f"base database name {base!r} is too long: {base + PREVIOUS!r} must fit in "
                        f"{marker.MAX_IDENT_BYTES} bytes; use a name of at most "
                        f"{marker.MAX_IDENT_BYTES - len(PREVIOUS)} bytes")


def _db(admin, name: str) -> dict | None:
    """The database's comment, whether it accepts connections and whether the seeding role owns it; None if absent."""
    return admin.execute(
        "SELECT shobj_description(oid, 'pg_database') AS comment, datallowconn AS open,"
        " datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user) AS mine"
        " FROM pg_database WHERE datname = %s", (name,)).fetchone()


def _is_base(comment: str | None, name: str) -> bool:
    """Marked as the base called ``name``. Bases seeded before marks named their base
    (``role=base; export=...``) count too, but only under a name that is not one of seed's work names:
    such a mark cannot tell ``shop`` from a leftover ``shop__previous``."""
    if marker.marked_as(comment, role="base", base=name):
        return True
    tags = marker.parse_marker(comment) or {}
    return (tags.get("role") == "base" and "base" not in tags and "export" in tags
            and not name.endswith((STAGING, PREVIOUS)))


def _ours(comment: str | None, base: str) -> bool:
    """A work database (staging or previous) of seeding ``base``: marked as that base."""
    return marker.marked_as(comment, role="base", base=base)


def _what(comment: str | None) -> str:
    """What a database is, from its mark, for a refusal a person can act on."""
    tags = marker.parse_marker(comment)
    if tags is None:
        return "a database prodclone did not create"
    role = tags.get("role")
    if role == "registry":
        return "prodclone's registry of snapshots and clones"
    if role == "clone":
        return f"the clone of environment {tags.get('env', '?')!r}"
    if role == "snapshot":
        return f"a snapshot of base {tags.get('base', '?')!r}"
    if role == "base" and "base" in tags:
        return f"a work database of seeding base {tags['base']!r}"
    if role == "base":
        return "a base marked by an older prodclone, under another name"
    return f"a prodclone database (role {role!r}) that is not a base"


def _drop_ours(admin, name: str, base: str) -> None:
    """Drop ``name`` if it is (still) a work database of seeding ``base``; anything else stays."""
    row = _db(admin, name)
    if row is not None and _ours(row["comment"], base):
        drop_database(admin, name)


def _set_open(admin, name: str, allow: bool) -> None:
    admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
        sql.Identifier(name), sql.SQL("true" if allow else "false")))


def _rename(admin, old: str, new: str) -> None:
    admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


def _is_empty(dsn: str) -> bool:
    """Whether the database holds nothing template0 does not: no schema, table, function, type or large object."""
    with connect(catalog_only(dsn), role="staging") as conn:
        return not conn.execute(
            "SELECT EXISTS (SELECT FROM pg_class WHERE oid >= %(f)s) OR EXISTS (SELECT FROM pg_namespace WHERE oid >= %(f)s)"
            " OR EXISTS (SELECT FROM pg_proc WHERE oid >= %(f)s) OR EXISTS (SELECT FROM pg_type WHERE oid >= %(f)s)"
            " OR EXISTS (SELECT FROM pg_largeobject_metadata)", {"f": FIRST_USER_OID}).fetchone()[0]


def _open_private(admin, name: str) -> None:
    """PUBLIC (so every clone role) loses its default CONNECT and TEMPORARY first, then ``name`` accepts sessions."""
    admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
    _set_open(admin, name, True)


def _unmarked_staging(admin, target_dsn: str, staging: str, row: dict) -> bool:
    """Whether an unmarked ``staging`` is the one a killed seed left between CREATE DATABASE and its COMMENT
    (Postgres finishes a CREATE DATABASE even when its client dies). All must hold: the name is exactly
    ``<base>__staging``, seed's own work name for this base (clone users cannot create databases); it has no
    comment at all; the seeding role owns it (only that role or a superuser could have made it so); and it is
    empty, as CREATE DATABASE ... TEMPLATE template0 leaves it. The last makes dropping it harmless even if
    the others were a coincidence: it holds nothing to lose. Seed creates it closed, so it is opened (PUBLIC
    shut out) to be looked at."""
    if row["comment"] is not None or not row["mine"]:
        return False
    if not row["open"]:
        _open_private(admin, staging)
    return _is_empty(with_dbname(target_dsn, staging))


def _lock(admin, base: str) -> None:
    """One seed of a base at a time: a second one would take the first's staging for a leftover and drop it.
    A session lock, so a killed seed releases it with its connection."""
    if not admin.execute("SELECT pg_try_advisory_lock(hashtext(%s)) AS ok", (f"prodclone:seed:{base}",)).fetchone()["ok"]:
        raise SeedError(f"another seed of {base!r} is running; retry when it has finished")


def owner_role(base: str) -> str:
    """The name of ``base``'s owner role: a digest of the base's name, so any name (any characters, up to 53
    bytes) gives a short, plain role name."""
    return OWNER_PREFIX + hashlib.sha256(base.encode()).hexdigest()[:16]


def _owner(admin, name: str) -> dict | None:
    """Role ``name``'s comment, the attributes it has that an owner role must not, and the roles it is a member
    of; None if there is no such role."""
    return admin.execute(
        "SELECT shobj_description(r.oid, 'pg_authid') AS comment,"
        " array_remove(ARRAY[CASE WHEN r.rolsuper THEN 'SUPERUSER' END, CASE WHEN r.rolcreatedb THEN 'CREATEDB' END,"
        " CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END, CASE WHEN r.rolreplication THEN 'REPLICATION' END,"
        " CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' END], NULL) AS powers,"
        " ARRAY(SELECT pg_get_userbyid(m.roleid) FROM pg_auth_members m WHERE m.member = r.oid ORDER BY 1) AS member_of"
        " FROM pg_roles r WHERE r.rolname = %s", (name,)).fetchone()


def _prepare_owner(admin, base: str) -> str:
    """``base``'s owner role, created (and marked, in one transaction) if absent. One that exists must be
    prodclone's owner role of this very base, with no attribute and a member of no role: production's code runs
    with its rights, so anything more stops the seed (fail closed). Settings it gave itself (``ALTER ROLE
    CURRENT_USER SET``, as code of an earlier load could) are reset."""
    name = owner_role(base)
    found = _owner(admin, name)
    if found is None:
        roles.create_marked_role(admin, name, marker.format_marker(role="owner", base=base))
        faults.fault_point("seed.owner_created")
        return name
    if not marker.marked_as(found["comment"], role="owner", base=base):
        raise SeedError(f"role {name!r} exists but is not prodclone's owner role of base {base!r}; seed loads the "
                        f"base as that role and will not use it: rename or drop it")
    if found["powers"] or found["member_of"]:
        extra = [*found["powers"], *(f"membership of {r!r}" for r in found["member_of"])]
        raise SeedError(f"owner role {name!r} has {', '.join(extra)}; seed runs production's code as that role, so "
                        f"it must have no attribute and be a member of no role: remove them (ALTER ROLE ... NO..., "
                        f"REVOKE ... FROM it) and re-run")
    admin.execute(sql.SQL("ALTER ROLE {} RESET ALL").format(sql.Identifier(name)))
    return name


def _repair(admin, target_dsn: str, base: str) -> None:
    """Undo what a seed killed at any step left, before this seed starts: put back a base that only survives
    as ``__previous``, reopen a base closed for a swap that never happened, remove work databases, and shut
    the owner role out again (a kill while it could log in leaves it so, with a password nobody knows).
    A database under a work name that is not ours stops the seed: prodclone never deletes what it did not mark."""
    owner = owner_role(base)
    found = _owner(admin, owner)
    if found is not None and marker.marked_as(found["comment"], role="owner", base=base):
        roles.lock_out(admin, owner)
    staging, previous = base + STAGING, base + PREVIOUS
    prev = _db(admin, previous)
    if prev is not None and not _ours(prev["comment"], base):
        raise SeedError(f"database {previous!r} is {_what(prev['comment'])}; seed uses that name for the "
                        f"previous base of {base!r} and will not touch it: rename or drop it")
    current = _db(admin, base)
    if prev is not None and current is None:
        log.warning("restoring base %r from %r left by an interrupted seed", base, previous)
        _rename(admin, previous, base)
        current, prev = _db(admin, base), None
    if current is not None and _is_base(current["comment"], base) and not current["open"]:
        log.warning("reopening base %r, closed by an interrupted seed", base)
        _set_open(admin, base, True)
    if prev is not None:
        drop_database(admin, previous)
    left = _db(admin, staging)
    if left is not None:
        if not (_ours(left["comment"], base) or _unmarked_staging(admin, target_dsn, staging, left)):
            raise SeedError(f"database {staging!r} is {_what(left['comment'])}; seed uses that name to stage "
                            f"{base!r} and will not touch it: rename or drop it")
        drop_database(admin, staging)


def _verified_schema(storage, manifest: dict) -> dict[str, str]:
    """The schema files' text, read once and checked against the manifest's SHA-256 before anything runs:
    an edited file must never reach the server."""
    out = {}
    for section, entry in manifest["schema"].items():
        data = storage.read_bytes(entry["path"])
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise SeedError(f"{entry['path']}: checksum mismatch; the schema file was changed after the export. "
                            f"Nothing was run. Re-run the export.")
        out[section] = data.decode()
    return out


def _require_verified(storage, manifest: dict, force: bool) -> bool:
    """Whether the export passed verification: a ``verified`` record with a passed leak check, vouching for
    this very manifest. Otherwise refuse, unless forced (then say so loudly, and return False)."""
    record = manifest.get("verified") or {}
    if record.get("leak_check") == "passed" and record.get("manifest_sha256") == manifest_digest(manifest):
        return True
    why = ("its verification record does not match its manifest (changed after verification)" if record else
           "it has not passed verification (the checksum and leak check after export)")
    if not force:
        raise SeedError(f"refusing to seed from {storage.url}: {why}. Run `prodclone verify --from <url> --source "
                        f"<dsn> --rules <file>`: if the leak check fails, fix the masking rule it names and re-run "
                        f"the export. --force-unverified loads it anyway. Nothing was changed.")
    log.warning("SEEDING AN UNVERIFIED EXPORT from %s: %s. Forced with --force-unverified; the base's mark "
                "says so (unverified=forced)", storage.url, why)
    return False


def _load_table(conn, storage, table: dict, compression: str) -> int:
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(*split_qualified(table["name"])), sql.SQL(", ").join(map(sql.Identifier, table["columns"])))
    rows = 0
    for f in table["files"]:
        digest = hashlib.sha256()
        with conn.cursor().copy(copy_sql) as copy:
            for chunk in datafile.read(storage, f["path"], compression, digest):
                copy.write(chunk)
            if digest.hexdigest() != f["sha256"]:
                raise SeedError(f"{f['path']}: checksum mismatch; the export is corrupt. Re-run the export.")
        rows += f["rows"]
    return rows


def seed(export: str | StorageTarget, target_dsn: str, *, overwrite: bool = False,
         labels: str = "", force_unverified: bool = False) -> SeedResult:
    """Seed ``target_dsn``'s database from the export at ``export``, which must have passed
    verification unless ``force_unverified``."""
    started = time.perf_counter()
    base = dbname_of(target_dsn)
    _check_name(base)
    storage = open_storage(export)
    manifest = read_manifest(storage)
    verified = _require_verified(storage, manifest, force_unverified)
    schema = _verified_schema(storage, manifest)
    staging = base + STAGING
    tags = ({"export": manifest["created_at"], "rules": manifest["rules_sha256"][:12]}
            | ({"labels": labels} if labels else {}) | ({} if verified else {"unverified": "forced"}))
    admin = connect(catalog_only(with_dbname(target_dsn, ADMIN_DB)), role="target", autocommit=True, row_factory=dict_row)
    try:
        _lock(admin, base)
        _repair(admin, target_dsn, base)
        current = _db(admin, base)
        if current is not None and not _is_base(current["comment"], base):
            raise SeedError(f"database {base!r} is {_what(current['comment'])}; seed replaces only the base it "
                            f"created under this name")
        if current is not None and not overwrite:
            raise SeedError(f"database {base!r} already exists; pass overwrite to replace it")
        with _step("preparing the owner role", ". The base role needs ADMIN on it (it has that on roles it created)"):
            owner = _prepare_owner(admin, base)
        _create_staging(admin, staging, marker.format_marker(role="base", base=base, **tags), owner)
        try:
            rows = _fill(admin, with_dbname(target_dsn, staging), owner, storage, manifest, schema)
            admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(sql.Identifier(staging),
                                                                              sql.Identifier(owner)))
        except BaseException:
            _drop_ours(admin, staging, base)
            raise
        faults.fault_point("seed.filled")
        _swap(admin, base, staging, replace=current is not None)
    finally:
        admin.close()
    return SeedResult(database=base, tables=len(manifest["tables"]), rows=rows,
                      seconds=round(time.perf_counter() - started, 3), replaced_previous=current is not None,
                      verified=verified)


def _create_staging(admin, staging: str, mark: str, owner: str) -> None:
    """Create and mark the staging database; only prodclone's admin role and ``owner`` may reach it (clone roles
    must not): it is created closed and opened only once PUBLIC's default rights are gone, so a clone user
    polling for it never gets a session (one could leave objects the base and every snapshot would carry).
    ``owner`` may connect and create schemas while seed fills it; the fill's end takes that away again."""
    admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' ALLOW_CONNECTIONS false").format(
        sql.Identifier(staging)))
    faults.fault_point("seed.created_staging")
    admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(staging), sql.Literal(mark)))
    faults.fault_point("seed.marked_staging")
    admin.execute(sql.SQL("GRANT CONNECT, CREATE ON DATABASE {} TO {}").format(sql.Identifier(staging),
                                                                             sql.Identifier(owner)))
    _open_private(admin, staging)


@contextmanager
def _step(what: str, hint: str = ""):
    """Database errors become a SeedError naming the step; prodclone's own errors pass through."""
    try:
        yield
    except ProdcloneError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SeedError(f"{what} failed: {first}{hint}") from exc


def _give_public(dsn: str, owner: str) -> None:
    """Postgres 15+ gives a new database's public schema to the database's owner (``pg_database_owner``), so
    only the base role could create in it: ``owner`` takes it over, as it owns every other schema (older
    servers let PUBLIC create in it). Staging is empty still: this session of the base role runs nothing of
    production's."""
    with connect(catalog_only(dsn), role="staging", autocommit=True) as conn:
        if conn.execute("SELECT pg_get_userbyid(nspowner) = 'pg_database_owner' FROM pg_namespace "
                        "WHERE nspname = 'public'").fetchone() == (True,):
            conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(owner)))


_NO_PARALLEL = "-c max_parallel_maintenance_workers=0 -c max_parallel_workers_per_gather=0"


def _connect_as_owner(admin, dsn: str, owner: str):
    """A session in staging as ``owner``, which can log in only for the moment it takes to open it."""
    _give_public(dsn, owner)
    with roles.login_once(admin, owner) as once:
        faults.fault_point("seed.owner_login")
        try:
            # No parallel workers: on PostgreSQL < 17 they re-check rolcanlogin and refuse a NOLOGIN role.
            options = " ".join(filter(None, [conninfo_to_dict(dsn).get("options"), _NO_PARALLEL]))
            return connect(catalog_only(make_conninfo(dsn, user=owner, password=once, options=options)),
                           role="staging", autocommit=True)
        except ConnectionFailed as exc:
            raise SeedError(f"{exc} Seed loads the export as the base's owner role {owner!r}, logging in with a "
                            f"one-time password: pg_hba.conf must let it log in with a password from this host, "
                            f"as clone roles do.") from None


def _fill(admin, dsn: str, owner: str, storage, manifest: dict, schema: dict[str, str]) -> int:
    """Every step that can run production's code (all of them), in a session of ``owner``, never the base role."""
    conn = _connect_as_owner(admin, dsn, owner)
    try:
        with _step("applying the schema (pre-data)"):
            conn.execute(schema["pre_data"])
        faults.fault_point("seed.filling")
        rows = 0
        with conn.transaction():
            for table in manifest["tables"]:
                if table["files"]:
                    with _step(f"loading {table['name']}"):
                        rows += _load_table(conn, storage, table, manifest.get("compression", "none"))
        with _step("building indexes and constraints (post-data)",
                   ". A UNIQUE violation means a masking rule lacks `unique: true`; an FK violation, a subset gap."):
            conn.execute(schema["post_data"])
        for seq in manifest["sequences"]:
            conn.execute("SELECT setval(%s::regclass, %s, %s)", (seq["name"], seq["last_value"], seq["is_called"]))
        _refresh_matviews(conn)
        conn.execute("ANALYZE")
        return rows
    finally:
        conn.close()


# Every materialized view, and the materialized views its query reads, directly or through views.
_MATVIEW_DEPS = """
WITH RECURSIVE reach(root, rel, kind) AS (
    SELECT oid, oid, relkind FROM pg_class WHERE relkind = 'm'
  UNION
    SELECT r.root, c.oid, c.relkind FROM reach r
      JOIN pg_rewrite w ON w.ev_class = r.rel
      JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid AND d.refclassid = 'pg_class'::regclass
      JOIN pg_class c ON c.oid = d.refobjid AND c.relkind IN ('v', 'm')
     WHERE c.oid <> r.rel AND (r.rel = r.root OR r.kind = 'v')
)
SELECT r.root, n.nspname, c.relname, r.rel, r.kind FROM reach r
  JOIN pg_class c ON c.oid = r.root JOIN pg_namespace n ON n.oid = c.relnamespace
"""


def _refresh_matviews(conn) -> None:
    """pg_dump --schema-only creates materialized views WITH NO DATA: fill each once the data is in, after the
    materialized views it reads, as the owner role (it owns them: the schema is restored without owners)."""
    names, graph = {}, {}
    for root, schema, rel, dep, kind in conn.execute(_MATVIEW_DEPS).fetchall():
        names[root] = (schema, rel)
        graph.setdefault(root, set()).update({dep} if kind == "m" and dep != root else set())
    for oid in graphlib.TopologicalSorter(graph).static_order():
        schema, rel = names[oid]
        with _step(f"refreshing materialized view {qualified_name(schema, rel)}"):
            conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.Identifier(schema, rel)))


def _swap(admin, base: str, staging: str, replace: bool) -> None:
    """Make staging the base in one transaction (a kill inside it rolls both renames back); the old base,
    renamed to ``__previous``, is dropped after. A kill between the steps is repaired by the next seed."""
    previous = base + PREVIOUS
    if replace:
        _set_open(admin, base, False)
        faults.fault_point("seed.closed_base")
        # Autovacuum workers are not ours to end (only a superuser may); the rename cancels them itself.
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                      "AND backend_type <> 'autovacuum worker'", (base,))
    try:
        with admin.transaction():
            if replace:
                _rename(admin, base, previous)
            _rename(admin, staging, base)
            faults.fault_point("seed.swapping")
    except Exception as exc:
        if replace:  # the previous base stays in service
            _set_open(admin, base, True)
        _drop_ours(admin, staging, base)
        raise SeedError(f"swapping the new base in failed; the previous base is untouched: {exc}") from exc
    faults.fault_point("seed.swapped")
    if replace:
        _drop_ours(admin, previous, base)
