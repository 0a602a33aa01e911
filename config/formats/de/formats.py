"""German date-times as German offices write them (04.12.2026 05:30): short enough for a list column."""
DATETIME_FORMAT = "d.m.Y H:i"
