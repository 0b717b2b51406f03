"""The feedback store: samples and the human (or AI) labels on them, in one SQLite file.

A *sample* is a (prompt, completion) pair with its task, the model that wrote it and free
metadata. Labels on samples come in the kinds the RLHF literature uses, each with its rater and
time:

- **rating**: a score from 1 to 5 with an optional comment;
- **ranking**: several completions of ONE prompt, best first (pairwise preferences are derived
  from it: every earlier item beats every later one); a preference "a beats b" is a ranking of
  two;
- **edit**: a corrected completion;
- **demonstration**: a completion written by the rater for a prompt (no sample needed);
- **binary label**: thumbs up (1) or down (0), e.g. the human labels of Taskmaster-4.

The labeling queue holds *tasks*: "rate this sample", "rank these samples", "edit this sample",
"write a completion for this prompt". The web app (:mod:`textgym.feedback.server`) and
:class:`~textgym.feedback.human.HumanReward` take the next open task for a rater; a task is done
once ``needed`` different raters labelled it (several raters per item give agreement statistics).

The file is opened in WAL mode with a busy timeout, every write is one ``BEGIN IMMEDIATE``
transaction, so several threads or processes can label at once and a crash leaves either the
whole label or none of it. The schema is versioned with ``PRAGMA user_version``; opening an older
file migrates it in place, one transaction per step, and a file written by a newer textgym is
refused rather than damaged.

>>> import tempfile, os
>>> store = FeedbackStore(os.path.join(tempfile.mkdtemp(), "fb.sqlite"))
>>> a = store.add_sample("Say hi.", "Hello there!")
>>> b = store.add_sample("Say hi.", "Go away.")
>>> store.add_sample("Say hi.", "Hello there!") == a  # identical samples are stored once
True
>>> _ = store.add_ranking([a, b], rater="alice")
>>> store.preference_pairs()
[PreferencePair(prompt='Say hi.', chosen='Hello there!', rejected='Go away.', rater='alice')]
>>> _ = store.add_rating(a, 5, rater="bob", comment="friendly")
>>> [(r.score, r.rater, r.comment) for r in store.ratings()]
[(5, 'bob', 'friendly')]
>>> store.close()
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from textgym.feedback.records import (
    FieldError,
    RecordError,
    check_score,
    get_int,
    get_list,
    get_text,
    get_time,
    read_records,
    type_name,
)
from textgym.io import atomic_write

TaskKind = Literal["rate", "rank", "edit", "demo"]
TASK_KINDS: tuple[str, ...] = ("rate", "rank", "edit", "demo")
"""Labeling task kinds: rate one sample, rank several, edit one, or demonstrate for a prompt."""


class DuplicateLabel(ValueError):
    """The rater already labelled this task; ``label_id`` is that label (pass ``replace=True``
    to change it)."""

    def __init__(self, task_id: int, rater: str, label_id: int) -> None:
        super().__init__(
            f"rater {rater!r} already labelled task {task_id} (label {label_id}); "
            "pass replace=True to change that label"
        )
        self.label_id = label_id


class TaskComplete(ValueError):
    """The task already has every label it needs: a new rater's label would be one too many."""


# The table holding each task kind's labels (task_labels records who labelled what).
_LABEL_TABLES = {"rate": "ratings", "rank": "rankings", "edit": "edits", "demo": "demonstrations"}


class SchemaError(RuntimeError):
    """The database file was written by a newer textgym, or is not a feedback store."""


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class PreferencePair:
    """One pairwise preference derived from a ranking: ``chosen`` was ranked above ``rejected``."""

    prompt: str
    chosen: str
    rejected: str
    rater: str


@dataclass(frozen=True)
class Sample:
    """A stored (prompt, completion) pair."""

    id: int
    prompt: str
    completion: str
    task: str = ""
    model: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0


@dataclass(frozen=True)
class Rating:
    """A 1-to-5 score of one sample."""

    id: int
    sample_id: int
    score: int
    rater: str
    comment: str = ""
    created: float = 0.0
    task_id: int | None = None


@dataclass(frozen=True)
class Ranking:
    """Completions of one prompt, best first."""

    id: int
    prompt: str
    sample_ids: tuple[int, ...]
    rater: str
    created: float = 0.0
    task_id: int | None = None


@dataclass(frozen=True)
class Edit:
    """A rater's corrected version of a sample's completion."""

    id: int
    sample_id: int
    text: str
    rater: str
    created: float = 0.0
    task_id: int | None = None


@dataclass(frozen=True)
class Demonstration:
    """A completion written by a rater for a prompt."""

    id: int
    prompt: str
    text: str
    rater: str
    task: str = ""
    created: float = 0.0
    task_id: int | None = None


@dataclass(frozen=True)
class BinaryLabel:
    """Thumbs up (1) or down (0) on one sample."""

    id: int
    sample_id: int
    label: int
    rater: str
    created: float = 0.0


@dataclass(frozen=True)
class LabelTask:
    """An item of the labeling queue (see the module docstring)."""

    id: int
    kind: str
    prompt: str
    sample_ids: tuple[int, ...]
    needed: int
    created: float = 0.0


# ----------------------------------------------------------------------------- schema


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated DDL inside the caller's transaction (``executescript`` would commit)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _migration_1(conn: sqlite3.Connection) -> None:
    """Samples and the five label kinds."""
    _run_script(
        conn,
        """
        CREATE TABLE samples (
            id INTEGER PRIMARY KEY,
            task TEXT NOT NULL DEFAULT '',
            prompt TEXT NOT NULL,
            completion TEXT NOT NULL,
            model TEXT NOT NULL DEFAULT '',
            meta TEXT NOT NULL DEFAULT '{}',
            created REAL NOT NULL,
            UNIQUE (task, prompt, completion, model)
        );
        CREATE TABLE ratings (
            id INTEGER PRIMARY KEY,
            sample_id INTEGER NOT NULL REFERENCES samples(id),
            score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
            rater TEXT NOT NULL,
            comment TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL
        );
        CREATE TABLE rankings (
            id INTEGER PRIMARY KEY,
            prompt TEXT NOT NULL,
            rater TEXT NOT NULL,
            created REAL NOT NULL
        );
        CREATE TABLE ranking_items (
            ranking_id INTEGER NOT NULL REFERENCES rankings(id),
            position INTEGER NOT NULL,
            sample_id INTEGER NOT NULL REFERENCES samples(id),
            PRIMARY KEY (ranking_id, position)
        );
        CREATE TABLE edits (
            id INTEGER PRIMARY KEY,
            sample_id INTEGER NOT NULL REFERENCES samples(id),
            text TEXT NOT NULL,
            rater TEXT NOT NULL,
            created REAL NOT NULL
        );
        CREATE TABLE demonstrations (
            id INTEGER PRIMARY KEY,
            task TEXT NOT NULL DEFAULT '',
            prompt TEXT NOT NULL,
            text TEXT NOT NULL,
            rater TEXT NOT NULL,
            created REAL NOT NULL
        );
        CREATE TABLE binary_labels (
            id INTEGER PRIMARY KEY,
            sample_id INTEGER NOT NULL REFERENCES samples(id),
            label INTEGER NOT NULL CHECK (label IN (0, 1)),
            rater TEXT NOT NULL,
            created REAL NOT NULL
        );
        CREATE INDEX ratings_sample ON ratings(sample_id);
        CREATE INDEX ranking_items_sample ON ranking_items(sample_id);
        CREATE INDEX edits_sample ON edits(sample_id);
        CREATE INDEX binary_labels_sample ON binary_labels(sample_id);
        """,
    )


def _migration_2(conn: sqlite3.Connection) -> None:
    """The labeling queue; labels remember the queue task they answer."""
    _run_script(
        conn,
        """
        CREATE TABLE tasks (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('rate', 'rank', 'edit', 'demo')),
            prompt TEXT NOT NULL,
            sample_ids TEXT NOT NULL DEFAULT '[]',
            needed INTEGER NOT NULL DEFAULT 1 CHECK (needed >= 1),
            created REAL NOT NULL
        );
        CREATE TABLE task_labels (
            task_id INTEGER NOT NULL REFERENCES tasks(id),
            rater TEXT NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY (task_id, rater)
        );
        ALTER TABLE ratings ADD COLUMN task_id INTEGER REFERENCES tasks(id);
        ALTER TABLE rankings ADD COLUMN task_id INTEGER REFERENCES tasks(id);
        ALTER TABLE edits ADD COLUMN task_id INTEGER REFERENCES tasks(id);
        ALTER TABLE demonstrations ADD COLUMN task_id INTEGER REFERENCES tasks(id);
        """,
    )


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migration_1, _migration_2)
"""``MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``."""
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, up_to: int = SCHEMA_VERSION) -> int:
    """Bring the schema of ``conn`` to version ``up_to``, one transaction per step; return it.

    Raises :class:`SchemaError` for a file written by a newer textgym (``user_version`` above
    :data:`SCHEMA_VERSION`): it is left untouched.
    """
    if not 0 <= up_to <= SCHEMA_VERSION:
        raise ValueError(f"up_to must be between 0 and {SCHEMA_VERSION}, got {up_to}")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"feedback store has schema version {version}, newer than this textgym supports "
            f"({SCHEMA_VERSION}); upgrade textgym to open it"
        )
    while version < up_to:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the write lock.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < up_to:
                MIGRATIONS[version](conn)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return version


# ----------------------------------------------------------------------------- the store


def _check_text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def _check_rater(rater: Any) -> str:
    if not isinstance(rater, str) or not rater.strip():
        raise ValueError(f"rater must be a non-empty name, got {rater!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in rater):
        raise ValueError(f"rater must not contain control characters, got {rater!r}")
    return rater.strip()


def _check_id(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return value


class FeedbackStore:
    """Samples, labels and the labeling queue in one SQLite file (WAL mode).

    One instance may be shared by threads (calls are serialised by a lock); several instances
    or processes may open the same file at once (SQLite's locking, with ``timeout`` seconds of
    waiting for the write lock).

    A label given for a labeling task (``task_id=``) counts once per (rater, task): a second one
    from the same rater raises :class:`DuplicateLabel` unless ``replace=True``, which replaces
    the first; a task that has all the labels it needs raises :class:`TaskComplete` for a new
    rater.

    Args:
        path: the database file; created, with its folder, when missing.
        timeout: seconds a write waits for another writer before ``sqlite3.OperationalError``.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.path = Path(path)
        if self.path.is_dir():
            raise IsADirectoryError(f"feedback store path {self.path} is a directory, not a file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
        self._conn = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            migrate(self._conn)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise SchemaError(f"{self.path} is not a feedback store ({exc})") from exc
        except BaseException:
            self._conn.close()
            raise

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is committed, or none of it. Inside :meth:`batch`
        it joins the batch's transaction (this thread holds the lock, so the open transaction
        is the batch's)."""
        with self._lock:
            if self._conn.in_transaction:
                yield self._conn
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def batch(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """Make every write inside the ``with`` block one transaction: an exception in it
        leaves the store as it was (importers use it so a bad record adds nothing).

        >>> import tempfile, os
        >>> store = FeedbackStore(os.path.join(tempfile.mkdtemp(), "fb.sqlite"))
        >>> try:
        ...     with store.batch():
        ...         _ = store.add_sample("p", "c")
        ...         raise ValueError("a bad record")
        ... except ValueError:
        ...     pass
        >>> store.counts()["samples"]
        0
        """
        return self._write()

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the connection (the store cannot be used afterwards)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeedbackStore({str(self.path)!r})"

    @property
    def schema_version(self) -> int:
        return self._read("PRAGMA user_version")[0][0]

    def _sample_prompt(self, conn: sqlite3.Connection, sample_id: int) -> str:
        row = conn.execute("SELECT prompt FROM samples WHERE id = ?", (sample_id,)).fetchone()
        if row is None:
            raise KeyError(f"no sample with id {sample_id} in {self.path}")
        return row[0]

    def _claim_task(
        self, conn: sqlite3.Connection, task_id: int | None, rater: str, replace: bool
    ) -> None:
        """Inside a write: record that ``rater`` labels ``task_id``, once per (rater, task).

        A second label by the same rater raises :class:`DuplicateLabel`, unless ``replace``, which
        deletes the earlier one first; a task with all its labels refuses a new rater
        (:class:`TaskComplete`).
        """
        if task_id is None:
            return
        row = conn.execute("SELECT kind, needed FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise KeyError(f"no labeling task with id {task_id} in {self.path}")
        kind, needed = row
        table = _LABEL_TABLES[kind]
        earlier = conn.execute(
            f"SELECT id FROM {table} WHERE task_id = ? AND rater = ? ORDER BY id",
            (task_id, rater),
        ).fetchall()
        if earlier and not replace:
            raise DuplicateLabel(task_id, rater, int(earlier[0][0]))
        if earlier:
            ids = [(int(r[0]),) for r in earlier]
            if table == "rankings":
                conn.executemany("DELETE FROM ranking_items WHERE ranking_id = ?", ids)
            conn.executemany(f"DELETE FROM {table} WHERE id = ?", ids)
            return  # task_labels already names this rater
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM task_labels WHERE task_id = ?", (task_id,)
        ).fetchone()
        if count >= needed:
            raise TaskComplete(
                f"task {task_id} already has the {needed} label(s) it needs; "
                f"rater {rater!r} cannot add another"
            )
        conn.execute(
            "INSERT INTO task_labels (task_id, rater, created) VALUES (?, ?, ?)",
            (task_id, rater, time.time()),
        )

    # ------------------------------------------------------------------ writing

    def add_sample(
        self,
        prompt: str,
        completion: str,
        *,
        task: str = "",
        model: str = "",
        meta: dict | None = None,
    ) -> int:
        """Store a sample and return its id; an identical (prompt, completion, task, model)
        returns the id already stored (its ``meta`` is kept)."""
        for name, value in (
            ("prompt", prompt),
            ("completion", completion),
            ("task", task),
            ("model", model),
        ):
            _check_text(name, value)
        if meta is not None and not isinstance(meta, dict):
            raise TypeError(f"meta must be a dict or None, got {type(meta).__name__}")
        try:
            meta_json = json.dumps(meta or {}, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"meta must be JSON-serialisable ({exc})") from exc
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO samples (task, prompt, completion, model, meta, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (task, prompt, completion, model, meta_json, time.time()),
            )
            row = conn.execute(
                "SELECT id FROM samples WHERE task = ? AND prompt = ? AND completion = ? "
                "AND model = ?",
                (task, prompt, completion, model),
            ).fetchone()
        return int(row[0])

    def add_rating(
        self,
        sample_id: int,
        score: int,
        *,
        rater: str,
        comment: str = "",
        task_id: int | None = None,
        replace: bool = False,
    ) -> int:
        """Record a 1-to-5 ``score`` of a sample (:func:`~textgym.feedback.records.check_score`:
        a whole number, ``4.0`` counts as 4, ``3.5`` is refused); return the rating id."""
        _check_id("sample_id", sample_id)
        score = check_score(score)
        rater = _check_rater(rater)
        _check_text("comment", comment)
        with self._write() as conn:
            self._sample_prompt(conn, sample_id)
            self._claim_task(conn, task_id, rater, replace)
            cur = conn.execute(
                "INSERT INTO ratings (sample_id, score, rater, comment, created, task_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (sample_id, score, rater, comment, time.time(), task_id),
            )
        return int(cur.lastrowid)

    def add_ranking(
        self,
        sample_ids: Sequence[int],
        *,
        rater: str,
        task_id: int | None = None,
        replace: bool = False,
    ) -> int:
        """Record ``sample_ids`` (completions of ONE prompt) ranked best first; return its id."""
        ids = [_check_id("sample_ids item", i) for i in sample_ids]
        if len(ids) < 2:
            raise ValueError(f"a ranking needs at least 2 samples, got {len(ids)}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"a ranking lists each sample once, got {ids}")
        rater = _check_rater(rater)
        with self._write() as conn:
            prompts = {self._sample_prompt(conn, i) for i in ids}
            if len(prompts) != 1:
                raise ValueError(
                    f"a ranking compares completions of ONE prompt; samples {ids} have "
                    f"{len(prompts)} different prompts"
                )
            self._claim_task(conn, task_id, rater, replace)
            cur = conn.execute(
                "INSERT INTO rankings (prompt, rater, created, task_id) VALUES (?, ?, ?, ?)",
                (prompts.pop(), rater, time.time(), task_id),
            )
            ranking_id = int(cur.lastrowid)
            conn.executemany(
                "INSERT INTO ranking_items (ranking_id, position, sample_id) VALUES (?, ?, ?)",
                [(ranking_id, pos, sid) for pos, sid in enumerate(ids)],
            )
        return ranking_id

    def add_edit(
        self,
        sample_id: int,
        text: str,
        *,
        rater: str,
        task_id: int | None = None,
        replace: bool = False,
    ) -> int:
        """Record ``text``, a rater's corrected completion for a sample; return the edit id."""
        _check_id("sample_id", sample_id)
        _check_text("text", text)
        rater = _check_rater(rater)
        with self._write() as conn:
            self._sample_prompt(conn, sample_id)
            self._claim_task(conn, task_id, rater, replace)
            cur = conn.execute(
                "INSERT INTO edits (sample_id, text, rater, created, task_id) VALUES (?, ?, ?, ?, ?)",
                (sample_id, text, rater, time.time(), task_id),
            )
        return int(cur.lastrowid)

    def add_demonstration(
        self,
        prompt: str,
        text: str,
        *,
        rater: str,
        task: str = "",
        task_id: int | None = None,
        replace: bool = False,
    ) -> int:
        """Record ``text``, a completion a rater wrote for ``prompt``; return its id."""
        _check_text("prompt", prompt)
        _check_text("text", text)
        _check_text("task", task)
        rater = _check_rater(rater)
        with self._write() as conn:
            self._claim_task(conn, task_id, rater, replace)
            cur = conn.execute(
                "INSERT INTO demonstrations (task, prompt, text, rater, created, task_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (task, prompt, text, rater, time.time(), task_id),
            )
        return int(cur.lastrowid)

    def add_label(self, sample_id: int, label: int | bool, *, rater: str) -> int:
        """Record a binary label (1 good, 0 bad) on a sample; return the label id."""
        _check_id("sample_id", sample_id)
        if label not in (0, 1):
            raise ValueError(f"a binary label is 0 or 1, got {label!r}")
        rater = _check_rater(rater)
        with self._write() as conn:
            self._sample_prompt(conn, sample_id)
            cur = conn.execute(
                "INSERT INTO binary_labels (sample_id, label, rater, created) VALUES (?, ?, ?, ?)",
                (sample_id, int(label), rater, time.time()),
            )
        return int(cur.lastrowid)

    # ------------------------------------------------------------------ labeling queue

    def add_task(
        self,
        kind: str,
        *,
        sample_ids: Sequence[int] = (),
        prompt: str | None = None,
        needed: int = 1,
    ) -> int:
        """Queue a labeling task; return its id.

        ``"rate"`` and ``"edit"`` take one sample, ``"rank"`` two or more samples of one prompt,
        ``"demo"`` a ``prompt`` (no samples). ``needed`` raters must label it before it is done.
        """
        if kind not in TASK_KINDS:
            raise ValueError(f"task kind must be one of {list(TASK_KINDS)}, got {kind!r}")
        if isinstance(needed, bool) or not isinstance(needed, int) or needed < 1:
            raise ValueError(f"needed must be an int >= 1 (raters per item), got {needed!r}")
        ids = [_check_id("sample_ids item", i) for i in sample_ids]
        expected = {"rate": "exactly 1", "edit": "exactly 1", "rank": "2 or more", "demo": "no"}
        ok = {
            "rate": len(ids) == 1,
            "edit": len(ids) == 1,
            "rank": len(ids) >= 2 and len(set(ids)) == len(ids),
            "demo": not ids,
        }[kind]
        if not ok:
            raise ValueError(
                f"a {kind!r} task takes {expected[kind]} distinct sample ids, got {ids}"
            )
        if kind == "demo" and prompt is None:
            raise ValueError("a 'demo' task needs prompt=")
        with self._write() as conn:
            prompts = {self._sample_prompt(conn, i) for i in ids}
            if len(prompts) > 1:
                raise ValueError(f"a 'rank' task compares completions of ONE prompt, got {ids}")
            task_prompt = prompts.pop() if prompts else _check_text("prompt", prompt)
            cur = conn.execute(
                "INSERT INTO tasks (kind, prompt, sample_ids, needed, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (kind, task_prompt, json.dumps(ids), needed, time.time()),
            )
        return int(cur.lastrowid)

    def task(self, task_id: int) -> LabelTask:
        """The labeling task ``task_id`` (KeyError when there is none)."""
        rows = self._read(
            "SELECT id, kind, prompt, sample_ids, needed, created FROM tasks WHERE id = ?",
            (task_id,),
        )
        if not rows:
            raise KeyError(f"no labeling task with id {task_id} in {self.path}")
        return self._task(rows[0])

    def tasks(self, *, kind: str | None = None) -> list[LabelTask]:
        """The labeling queue in id order (done tasks included), optionally one kind's."""
        sql = "SELECT id, kind, prompt, sample_ids, needed, created FROM tasks"
        rows = self._read(
            sql + (" WHERE kind = ?" if kind else "") + " ORDER BY id", (kind,) if kind else ()
        )
        return [self._task(r) for r in rows]

    @staticmethod
    def _task(row: tuple) -> LabelTask:
        tid, kind, prompt, ids, needed, created = row
        return LabelTask(tid, kind, prompt, tuple(json.loads(ids)), needed, created)

    def next_task(
        self, rater: str, *, kinds: Iterable[str] = TASK_KINDS, exclude: Iterable[int] = ()
    ) -> LabelTask | None:
        """The oldest open task ``rater`` has not labelled yet, among ``kinds`` and not in
        ``exclude`` (tasks the rater skipped); None when there is none."""
        rater = _check_rater(rater)
        kinds = list(kinds)
        excluded = [int(t) for t in exclude]
        marks = ",".join("?" * len(kinds))
        rows = self._read(
            f"""
            SELECT t.id, t.kind, t.prompt, t.sample_ids, t.needed, t.created FROM tasks t
            WHERE t.kind IN ({marks})
              AND (SELECT COUNT(*) FROM task_labels l WHERE l.task_id = t.id) < t.needed
              AND NOT EXISTS (SELECT 1 FROM task_labels l WHERE l.task_id = t.id AND l.rater = ?)
              AND t.id NOT IN ({",".join("?" * len(excluded))})
            ORDER BY t.id LIMIT 1
            """,
            (*kinds, rater, *excluded),
        )
        return self._task(rows[0]) if rows else None

    def task_done(self, task_id: int) -> bool:
        """Whether the task has all the labels it needs."""
        rows = self._read(
            "SELECT t.needed <= (SELECT COUNT(*) FROM task_labels l WHERE l.task_id = t.id) "
            "FROM tasks t WHERE t.id = ?",
            (task_id,),
        )
        if not rows:
            raise KeyError(f"no labeling task with id {task_id} in {self.path}")
        return bool(rows[0][0])

    def task_scores(self, task_ids: Sequence[int]) -> dict[int, list[int]]:
        """The rating scores given for each of ``task_ids`` (an empty list when none yet)."""
        out: dict[int, list[int]] = {int(t): [] for t in task_ids}
        if out:
            rows = self._read(
                f"SELECT task_id, score FROM ratings WHERE task_id IN ({','.join('?' * len(out))}) "
                "ORDER BY id",
                list(out),
            )
            for tid, score in rows:
                out[tid].append(score)
        return out

    def progress(self, rater: str | None = None) -> dict[str, int]:
        """Queue counts: ``tasks``, ``done`` (fully labelled), ``open``; with ``rater``, also
        ``labelled_by_rater`` and ``left_for_rater`` (open tasks this rater can still label)."""
        total, done = self._read(
            "SELECT COUNT(*), COALESCE(SUM(t.needed <= (SELECT COUNT(*) FROM task_labels l "
            "WHERE l.task_id = t.id)), 0) FROM tasks t"
        )[0]
        out = {"tasks": int(total), "done": int(done), "open": int(total - done)}
        if rater is not None:
            rater = _check_rater(rater)
            mine = self._read("SELECT COUNT(*) FROM task_labels WHERE rater = ?", (rater,))[0][0]
            left = self._read(
                "SELECT COUNT(*) FROM tasks t WHERE (SELECT COUNT(*) FROM task_labels l "
                "WHERE l.task_id = t.id) < t.needed AND NOT EXISTS (SELECT 1 FROM task_labels l "
                "WHERE l.task_id = t.id AND l.rater = ?)",
                (rater,),
            )[0][0]
            out.update(labelled_by_rater=int(mine), left_for_rater=int(left))
        return out

    # ------------------------------------------------------------------ reading

    def sample(self, sample_id: int) -> Sample:
        """The sample ``sample_id`` (KeyError when there is none)."""
        found = self.samples(ids=[sample_id])
        if not found:
            raise KeyError(f"no sample with id {sample_id} in {self.path}")
        return found[0]

    def samples(self, *, task: str | None = None, ids: Sequence[int] | None = None) -> list[Sample]:
        """Stored samples in id order, optionally only one task's or only the given ids."""
        sql = "SELECT id, prompt, completion, task, model, meta, created FROM samples"
        where, params = [], []
        if task is not None:
            where.append("task = ?")
            params.append(task)
        if ids is not None:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            params.extend(ids)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._read(sql + " ORDER BY id", params)
        return [Sample(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6]) for r in rows]

    def ratings(self, *, rater: str | None = None) -> list[Rating]:
        """Ratings in the order they were given, optionally by one rater."""
        sql = "SELECT id, sample_id, score, rater, comment, created, task_id FROM ratings"
        rows = self._read(
            sql + (" WHERE rater = ?" if rater else "") + " ORDER BY id", (rater,) if rater else ()
        )
        return [Rating(*r) for r in rows]

    def rankings(self, *, rater: str | None = None) -> list[Ranking]:
        """Rankings in the order they were given, optionally by one rater."""
        sql = "SELECT id, prompt, rater, created, task_id FROM rankings"
        with self._lock:
            rows = self._conn.execute(
                sql + (" WHERE rater = ?" if rater else "") + " ORDER BY id",
                (rater,) if rater else (),
            ).fetchall()
            items: dict[int, list[int]] = {}
            for rid, sid in self._conn.execute(
                "SELECT ranking_id, sample_id FROM ranking_items ORDER BY ranking_id, position"
            ):
                items.setdefault(rid, []).append(sid)
        return [
            Ranking(rid, prompt, tuple(items.get(rid, ())), who, created, tid)
            for rid, prompt, who, created, tid in rows
        ]

    def edits(self, *, rater: str | None = None) -> list[Edit]:
        """Edits in the order they were given, optionally by one rater."""
        sql = "SELECT id, sample_id, text, rater, created, task_id FROM edits"
        rows = self._read(
            sql + (" WHERE rater = ?" if rater else "") + " ORDER BY id", (rater,) if rater else ()
        )
        return [Edit(*r) for r in rows]

    def demonstrations(self, *, rater: str | None = None) -> list[Demonstration]:
        """Demonstrations in the order they were given, optionally by one rater."""
        sql = "SELECT id, prompt, text, rater, task, created, task_id FROM demonstrations"
        rows = self._read(
            sql + (" WHERE rater = ?" if rater else "") + " ORDER BY id", (rater,) if rater else ()
        )
        return [Demonstration(*r) for r in rows]

    def labels(self, *, rater: str | None = None) -> list[BinaryLabel]:
        """Binary labels in the order they were given, optionally by one rater."""
        sql = "SELECT id, sample_id, label, rater, created FROM binary_labels"
        rows = self._read(
            sql + (" WHERE rater = ?" if rater else "") + " ORDER BY id", (rater,) if rater else ()
        )
        return [BinaryLabel(*r) for r in rows]

    def preference_pairs(self, *, rater: str | None = None) -> list[PreferencePair]:
        """Every (earlier, later) pair of every ranking, optionally only one rater's.

        Human raters and AI judges (``rater="ai:<judge>"``) give pairs of the same form.
        """
        rows = self._read(
            "SELECT r.rater, r.prompt, a.completion, b.completion FROM rankings r "
            "JOIN ranking_items x ON x.ranking_id = r.id "
            "JOIN ranking_items y ON y.ranking_id = r.id AND x.position < y.position "
            "JOIN samples a ON a.id = x.sample_id JOIN samples b ON b.id = y.sample_id"
            + (" WHERE r.rater = ?" if rater else "")
            + " ORDER BY r.id, x.position, y.position",
            (rater,) if rater else (),
        )
        return [
            PreferencePair(prompt, chosen, rejected, who) for who, prompt, chosen, rejected in rows
        ]

    def raters(self) -> list[str]:
        """Everyone who gave any label, sorted."""
        rows = self._read(
            "SELECT rater FROM ratings UNION SELECT rater FROM rankings UNION "
            "SELECT rater FROM edits UNION SELECT rater FROM demonstrations UNION "
            "SELECT rater FROM binary_labels ORDER BY rater"
        )
        return [r[0] for r in rows]

    def counts(self) -> dict[str, int]:
        """Rows per kind: samples, ratings, rankings, edits, demonstrations, labels, tasks."""
        tables = {
            "samples": "samples",
            "ratings": "ratings",
            "rankings": "rankings",
            "edits": "edits",
            "demonstrations": "demonstrations",
            "labels": "binary_labels",
            "tasks": "tasks",
        }
        return {k: self._read(f"SELECT COUNT(*) FROM {t}")[0][0] for k, t in tables.items()}

    def integrity_check(self) -> list[str]:
        """Problems found (empty when consistent): SQLite's own check, foreign keys, rankings."""
        problems = [r[0] for r in self._read("PRAGMA integrity_check") if r[0] != "ok"]
        problems += [f"foreign key: {r}" for r in self._read("PRAGMA foreign_key_check")]
        bad = self._read(
            "SELECT r.id, COUNT(i.position), COALESCE(MAX(i.position), -1) FROM rankings r "
            "LEFT JOIN ranking_items i ON i.ranking_id = r.id GROUP BY r.id "
            "HAVING COUNT(i.position) < 2 OR MAX(i.position) <> COUNT(i.position) - 1"
        )
        problems += [f"ranking {rid} has {n} items (last position {last})" for rid, n, last in bad]
        return problems

    # ------------------------------------------------------------------ JSONL

    def export_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Write every sample and label as JSON lines (samples first); return the line count.

        Each line has a ``"type"``: ``sample``, ``rating``, ``ranking``, ``edit``,
        ``demonstration`` or ``label``. Labels refer to samples by their ``id`` in the file.
        The file is written atomically.
        """
        lines = [{"type": "sample", **asdict(s)} for s in self.samples()]
        lines += [{"type": "rating", **_drop_task(asdict(r))} for r in self.ratings()]
        lines += [{"type": "ranking", **_drop_task(asdict(r))} for r in self.rankings()]
        lines += [{"type": "edit", **_drop_task(asdict(e))} for e in self.edits()]
        lines += [{"type": "demonstration", **_drop_task(asdict(d))} for d in self.demonstrations()]
        lines += [{"type": "label", **asdict(b)} for b in self.labels()]
        atomic_write(path, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
        return len(lines)

    def import_jsonl(self, path: str | os.PathLike[str]) -> dict[str, int]:
        """Add the samples and labels of a file written by :meth:`export_jsonl`.

        Sample ids are remapped (identical samples merge with stored ones); the whole file is
        one transaction, so a bad line adds nothing. Returns the number of rows read per type.
        A bad file raises :class:`~textgym.feedback.records.RecordError`, whose message names
        the file, the line and the field.
        """
        counts: dict[str, int] = {}
        id_map: dict[int, int] = {}
        with self.batch() as conn:
            for n, rec in read_records(path):
                if not isinstance(rec, dict):
                    raise RecordError(
                        path, n, f"must be a JSON object with a 'type', got {type_name(rec)}"
                    )
                try:
                    kind = get_text(rec, "type")
                    if kind not in _IMPORTERS:
                        raise FieldError(
                            "type", f"must be one of {sorted(_IMPORTERS)}, got {kind!r}"
                        )
                    _IMPORTERS[kind](conn, rec, id_map)
                except FieldError as exc:
                    raise RecordError(path, n, exc.problem, exc.field) from None
                except RecursionError:
                    raise RecordError(path, n, "is nested too deeply to store") from None
                except (ValueError, TypeError, sqlite3.IntegrityError, OverflowError) as exc:
                    raise RecordError(
                        path, n, f"is a bad {rec.get('type')} record ({exc})"
                    ) from None
                counts[kind] = counts.get(kind, 0) + 1
        return counts


def _drop_task(record: dict[str, Any]) -> dict[str, Any]:
    record.pop("task_id", None)
    return record


def _created(rec: dict[str, Any]) -> float:
    created = get_time(rec)
    return time.time() if created is None else created


def _rater(rec: dict[str, Any]) -> str:
    try:
        return _check_rater(get_text(rec, "rater"))
    except ValueError as exc:
        if isinstance(exc, FieldError):
            raise
        raise FieldError("rater", str(exc).removeprefix("rater ")) from None


def _sample_ref(file_id: Any, field: str, id_map: dict[int, int]) -> int:
    """The store id of the sample that ``file_id`` (an id in the file) names."""
    if isinstance(file_id, bool) or not isinstance(file_id, int):
        raise FieldError(field, f"must be an integer sample id, got {file_id!r}")
    if file_id not in id_map:
        raise FieldError(field, f"names sample {file_id}, which no earlier 'sample' line defines")
    return id_map[file_id]


def _import_sample(conn: sqlite3.Connection, rec: dict, id_map: dict[int, int]) -> None:
    file_id = get_int(rec, "id")
    key = (
        get_text(rec, "task", default=""),
        get_text(rec, "prompt"),
        get_text(rec, "completion"),
        get_text(rec, "model", default=""),
    )
    meta = rec.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise FieldError("meta", f"must be an object or null, got {type_name(meta)}")
    conn.execute(
        "INSERT OR IGNORE INTO samples (task, prompt, completion, model, meta, created) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (*key, json.dumps(meta or {}, sort_keys=True), _created(rec)),
    )
    row = conn.execute(
        "SELECT id FROM samples WHERE task = ? AND prompt = ? AND completion = ? AND model = ?",
        key,
    ).fetchone()
    id_map[file_id] = int(row[0])


def _import_rating(conn: sqlite3.Connection, rec: dict, id_map: dict[int, int]) -> None:
    if "score" not in rec:
        raise FieldError("score", "is missing")
    conn.execute(
        "INSERT INTO ratings (sample_id, score, rater, comment, created) VALUES (?, ?, ?, ?, ?)",
        (
            _sample_ref(get_int(rec, "sample_id"), "sample_id", id_map),
            check_score(rec["score"]),
            _rater(rec),
            get_text(rec, "comment", default=""),
            _created(rec),
        ),
    )


def _import_ranking(conn: sqlite3.Connection, rec: dict, id_map: dict[int, int]) -> None:
    items = get_list(rec, "sample_ids")
    ids = [_sample_ref(item, f"sample_ids[{i}]", id_map) for i, item in enumerate(items)]
    if len(ids) < 2 or len(set(ids)) != len(ids):
        raise FieldError("sample_ids", f"must list 2 or more different samples, got {items}")
    cur = conn.execute(
        "INSERT INTO rankings (prompt, rater, created) VALUES (?, ?, ?)",
        (get_text(rec, "prompt"), _rater(rec), _created(rec)),
    )
    conn.executemany(
        "INSERT INTO ranking_items (ranking_id, position, sample_id) VALUES (?, ?, ?)",
        [(cur.lastrowid, pos, sid) for pos, sid in enumerate(ids)],
    )


def _import_edit(conn: sqlite3.Connection, rec: dict, id_map: dict[int, int]) -> None:
    conn.execute(
        "INSERT INTO edits (sample_id, text, rater, created) VALUES (?, ?, ?, ?)",
        (
            _sample_ref(get_int(rec, "sample_id"), "sample_id", id_map),
            get_text(rec, "text"),
            _rater(rec),
            _created(rec),
        ),
    )


def _import_demonstration(conn: sqlite3.Connection, rec: dict, id_map: dict[int, int]) -> None:
    conn.execute(
        "INSERT INTO demonstrations (task, prompt, text, rater, created) VALUES (?, ?, ?, ?, ?)",
        (
            get_text(rec, "task", default=""),
            get_text(rec, "prompt"),
            get_text(rec, "text"),
            _rater(rec),
            _created(rec),
        ),
    )


def _import_label(conn: sqlite3.Connection, rec: dict, id_map: dict[int, int]) -> None:
    label = rec.get("label")
    if label not in (0, 1) or isinstance(label, float):
        raise FieldError("label", f"must be 0 or 1 (or false/true), got {label!r}")
    conn.execute(
        "INSERT INTO binary_labels (sample_id, label, rater, created) VALUES (?, ?, ?, ?)",
        (
            _sample_ref(get_int(rec, "sample_id"), "sample_id", id_map),
            int(label),
            _rater(rec),
            _created(rec),
        ),
    )


_IMPORTERS: dict[str, Callable[[sqlite3.Connection, dict, dict[int, int]], None]] = {
    "sample": _import_sample,
    "rating": _import_rating,
    "ranking": _import_ranking,
    "edit": _import_edit,
    "demonstration": _import_demonstration,
    "label": _import_label,
}
