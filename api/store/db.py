"""Engine, sessions, the global revision, and schema upgrades.

Write transactions are serialised on purpose: on SQLite they start with
``BEGIN IMMEDIATE`` (the write lock is taken up front, so concurrent writers
wait on busy_timeout instead of failing to upgrade a read lock), and on every
backend their first statement bumps the single revision row, which PostgreSQL
locks until commit. Allocation of segmentation ids, MACs and IPs therefore
reads a settled state; the UNIQUE constraints remain the last word.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    Engine,
    Text,
    cast,
    create_engine,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.orm import Session, sessionmaker

import migrations
from api.metrics import DATABASE_ERRORS
from api.store.models import (
    DESIRED_STATE_CHILDREN,
    DeletedRow,
    GlobalRevision,
    LbBackend,
    LoadBalancer,
    Port,
    PortIp,
    Revisioned,
    utcnow,
)

_WRITE_OPTION = "ovs_fabric_write"
_SESSION_REVISION = "revision"
_SESSION_CHANGED = "changed"
# The PostgreSQL channel every commit of desired state (or of a health verdict)
# notifies, with the revision as payload: controllers LISTEN instead of polling.
DESIRED_STATE_CHANNEL = "ovs_fabric_desired_state"


class DatabaseUrlError(ValueError):
    """The configured database URL cannot be used."""


def parse_database_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError, ValueError...
        raise DatabaseUrlError(f"invalid database URL {url!r}: {exc}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise DatabaseUrlError(
            f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql+psycopg://"
        )
    return parsed


# NOTE: the API runs its sync routes on up to 40 worker threads (anyio's default) and a
# request may hold two connections one after the other (its token, then its work).
# SQLAlchemy's default pool keeps 5 and closes every connection beyond them when it
# comes back: under 32 concurrent clients most requests paid a new connection (on
# SQLite its PRAGMAs, on PostgreSQL a new backend process). Keep enough of them.
_POOL_SIZE = {"pool_size": 20, "max_overflow": 30}


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite files get WAL, foreign keys and a busy timeout."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _make_sqlite_engine(parsed)
    if parsed.drivername == "postgresql":
        # psycopg 3 is the driver the project ships with; plain postgresql:// would mean psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed, pool_pre_ping=True, **_POOL_SIZE)


def _make_sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    in_memory = not database or database == ":memory:" or "mode=memory" in str(url)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        **({} if in_memory else _POOL_SIZE),
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (see "begin" below): the sqlite3
        # module's implicit transactions would start reads outside them.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NOTE: FULL, not NORMAL: an answered write must survive a power loss too
        # (in WAL mode NORMAL syncs only at checkpoints, so the last commits could be
        # undone). It costs an fsync per commit inside the write lock (5.6 ms here,
        # about 180 writes/s at most: BENCHMARKS.md, rest_load); deployments that need
        # more write throughput use PostgreSQL.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _stamp_changes(session: Session, _context: Any, _instances: Any) -> None:
    """Stamp every changed desired-state row with the transaction's revision."""
    changed = [
        obj
        for obj in (*session.new, *session.dirty, *session.deleted)
        if isinstance(obj, (Revisioned, *DESIRED_STATE_CHILDREN))
        and (obj not in session.dirty or session.is_modified(obj))
    ]
    if not changed:
        return
    revision = session.info.get(_SESSION_REVISION)
    if revision is None:
        raise RuntimeError("desired state changed outside Database.write()")
    session.info[_SESSION_CHANGED] = True
    now = utcnow()
    with session.no_autoflush:
        # A changed child (an address, a backend) changes its parent's record: the
        # parent is stamped, so a reader of the rows changed since a revision sees it.
        parents = [_parent(session, obj) for obj in changed if not isinstance(obj, Revisioned)]
    for obj in dict.fromkeys([*changed, *(p for p in parents if p is not None)]):
        if not isinstance(obj, Revisioned):
            continue
        if obj in session.deleted:
            session.add(DeletedRow(kind=type(obj).__name__, row_id=obj.id, revision=revision))
        else:
            obj.revision = revision
            obj.updated_at = now
            if obj in session.new:
                obj.created_at = now


def _parent(session: Session, child: object) -> object | None:
    if isinstance(child, PortIp):
        return child.port or (session.get(Port, child.port_id) if child.port_id else None)
    if isinstance(child, LbBackend):
        lb_id = child.load_balancer_id
        return child.load_balancer or (session.get(LoadBalancer, lb_id) if lb_id else None)
    return None


def _count_database_error(context: ExceptionContext) -> None:
    DATABASE_ERRORS.labels(type(context.original_exception).__name__).inc()


class Database:
    """Owns the engine; hands out read sessions and revision-bumping write sessions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        event.listen(self.engine, "handle_error", _count_database_error)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        write_engine = self.engine.execution_options(**{_WRITE_OPTION: True})
        # A consistent snapshot across several SELECTs: SQLite gives it per
        # transaction anyway; PostgreSQL needs REPEATABLE READ for it.
        read_engine = (
            self.engine
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="REPEATABLE READ")
        )
        # Called after each commit of desired state by this process (any backend).
        self._change_listeners: list[Callable[[], None]] = []
        # NOTE: write transactions are serialised by the database anyway (the revision
        # row); serialising this process's writers first makes them queue here and wake
        # at once, instead of each holding a pooled connection while it waits, and on
        # SQLite instead of sleeping in its busy handler (up to 100 ms per retry).
        self._write_lock = threading.Lock()
        self._reader = sessionmaker(read_engine, expire_on_commit=False)
        self._writer = sessionmaker(write_engine, expire_on_commit=False)
        event.listen(self._reader, "before_flush", _stamp_changes)
        event.listen(self._writer, "before_flush", _stamp_changes)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction; it is rolled back at the end."""
        # NOTE: the session's close() rolls the transaction back and lets its objects
        # go as they are; rollback() first expired every one of them (a page of 100
        # ports: ~1.3 ms CPU of ~6, BENCHMARKS.md, rest_load).
        with self._reader() as session:
            session.begin()
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction that bumps the global revision when it changes desired state.

        The bump comes first: it takes the write lock (PostgreSQL row lock; SQLite
        is already locked by BEGIN IMMEDIATE). A transaction that changed no
        desired-state row is rolled back so the revision stays put; ORM changes
        are detected by themselves, Core UPDATE/DELETE statements need
        `mark_changed(session)`.
        """
        with self._writer() as session:
            session.begin()
            if not self.is_sqlite:
                # NOTE: the pooled connection (its pre-ping a round trip) is taken before
                # queueing for the write lock, so the serialised part holds only the
                # transaction's own statements; on SQLite taking it begins the
                # transaction (BEGIN IMMEDIATE), which must wait for the lock.
                session.connection()
            with self._write_lock:
                try:
                    # PostgreSQL: the bump carries the NOTIFY (delivered at commit only).
                    revision = bump_revision(session, notify=not self.is_sqlite)
                    session.info[_SESSION_REVISION] = revision
                    yield session
                    session.flush()
                    changed = bool(session.info.get(_SESSION_CHANGED))
                    if changed:
                        session.commit()
                    else:
                        session.rollback()
                except BaseException:
                    session.rollback()
                    raise
                finally:
                    session.info.clear()
        if changed:
            self.changes_committed()

    def notify_change(self, session: Session, revision: int) -> None:
        """PostgreSQL: NOTIFY the other processes at the commit of `session`."""
        if not self.is_sqlite:
            session.execute(select(func.pg_notify(DESIRED_STATE_CHANNEL, str(revision))))

    def changes_committed(self) -> None:
        """Wake this process's change listeners (after a commit)."""
        for listener in list(self._change_listeners):
            listener()

    def add_change_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` after every commit of desired state by this process; returns
        a function that removes it."""
        self._change_listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._change_listeners.remove(listener)

        return remove

    @contextmanager
    def unversioned_write(self) -> Iterator[Session]:
        """A transaction for rows that are not desired state (status, tokens): no revision bump."""
        with self._writer() as session, session.begin():
            yield session

    def current_revision(self) -> int:
        with self.engine.connect() as connection:
            return read_revision(connection)


def mark_changed(session: Session) -> None:
    """Declare a change made with Core statements (which the ORM stamping cannot see),
    so that `Database.write()` commits it instead of rolling back."""
    if session.info.get(_SESSION_REVISION) is None:
        raise RuntimeError("desired state changed outside Database.write()")
    session.info[_SESSION_CHANGED] = True


def change_revision(session: Session) -> int:
    """Declare a change made with Core statements (`mark_changed`) and return the
    revision its rows are stamped with: the write transaction's own."""
    mark_changed(session)
    return int(session.info[_SESSION_REVISION])


# The single row of `fabric_revision`.
_REVISION_ROW = GlobalRevision.id == 1


def read_revision(executor: Session | Connection) -> int:
    """The global revision as `executor` (a session or a connection) sees it; 0 without its row."""
    return int(executor.scalar(select(GlobalRevision.value).where(_REVISION_ROW)) or 0)


# Every write runs it first: one prebuilt statement on the session's connection (the
# ORM's bulk UPDATE and a second SELECT were ~13% of a port create's CPU, rest_load).
_BUMP_REVISION = (
    update(GlobalRevision)
    .where(_REVISION_ROW)
    .values(value=GlobalRevision.value + 1)
    .returning(GlobalRevision.value)
)
# ... and on PostgreSQL the NOTIFY of the change with it, one round trip fewer: a
# notification is delivered at commit only (a rolled-back write sends none).
_BUMP_REVISION_NOTIFY = _BUMP_REVISION.returning(
    func.pg_notify(DESIRED_STATE_CHANNEL, cast(GlobalRevision.value, Text))
)


def bump_revision(session: Session, *, notify: bool = False) -> int:
    """The global revision, incremented (`notify`: and NOTIFY sent at commit, PostgreSQL)."""
    value = session.connection().scalar(_BUMP_REVISION_NOTIFY if notify else _BUMP_REVISION)
    if not value:  # a bumped revision is at least 1
        raise RuntimeError("revision row missing: run `ovs-fabric db upgrade`")
    return int(value)


# ---- schema ------------------------------------------------------------------------

_UPGRADE_LOCK = threading.Lock()


def alembic_config(url: str) -> Config:
    """Alembic configuration pointing at the installed `migrations` package; no ini needed."""
    script_location = str(Path(migrations.__file__).resolve().parent)
    config = Config()
    config.set_main_option("script_location", script_location)
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "head") -> None:
    """Bring the schema at `url` to `revision` (default: the newest)."""
    with _UPGRADE_LOCK:
        command.upgrade(alembic_config(url), revision)


def downgrade_database(url: str, revision: str) -> None:
    with _UPGRADE_LOCK:
        command.downgrade(alembic_config(url), revision)


def schema_revision(url: str) -> str | None:
    """The Alembic revision the database at `url` is at (None: never migrated)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def ping(database: Database) -> None:
    with database.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
