"""English date-times in a short, unambiguous form (4 Dec 2026, 05:30): short enough for a list column."""
DATETIME_FORMAT = "j M Y, H:i"
