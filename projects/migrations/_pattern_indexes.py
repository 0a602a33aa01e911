"""Shared by migrations (Django's loader skips modules starting with '_'): drop the `varchar_pattern_ops` twins Django
adds on PostgreSQL to indexed text columns that no `LIKE 'prefix%'` query reads, and recreate them on the way back."""


def _pattern_indexes(schema_editor, indexed: dict[str, list[str]]):
    for table, columns in indexed.items():
        for column in columns:
            yield table, column, schema_editor._create_index_name(table, [column], suffix="_like")


def pattern_index_operations(indexed: dict[str, list[str]]):
    """(forward, backward) for RunPython: drop the twins of these tables' columns, recreate them; nothing on SQLite."""

    def drop(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for _table, _column, name in _pattern_indexes(schema_editor, indexed):
            schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")

    def recreate(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        quote = schema_editor.quote_name
        for table, column, name in _pattern_indexes(schema_editor, indexed):
            schema_editor.execute(
                f"CREATE INDEX IF NOT EXISTS {quote(name)} ON {quote(table)} ({quote(column)} varchar_pattern_ops)")

    return drop, recreate
