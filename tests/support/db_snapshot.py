"""Put a database back to a recorded state, for tests that must replay from one state.

A stateful fuzz sequence depends on what the database holds: a create that answered
201 in one sequence answers 409 in a later one that draws the same name. Hypothesis
requires the same draws to behave the same, so every sequence starts from the state
recorded here. Rows are restored table by table in foreign-key order; an
autoincrement column keeps its counter ahead (PostgreSQL sequences never go back,
SQLite takes max+1), so later inserts cannot collide with restored rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, MetaData, delete, insert, select


class DatabaseSnapshot:
    def __init__(self, engine: Engine, metadata: MetaData) -> None:
        self._engine = engine
        self._tables = list(metadata.sorted_tables)
        with engine.connect() as connection:
            self._rows: dict[str, list[dict[str, Any]]] = {
                table.name: [dict(row._mapping) for row in connection.execute(select(table))]
                for table in self._tables
            }

    def restore(self) -> None:
        with self._engine.begin() as connection:
            for table in reversed(self._tables):
                connection.execute(delete(table))
            for table in self._tables:
                rows = self._rows[table.name]
                if rows:
                    connection.execute(insert(table), rows)
