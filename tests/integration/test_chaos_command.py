"""The fault suite command, small: it must report zero lost and zero duplicated under faults and a kill."""
from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.integration


def test_epilot_chaos_reports_a_clean_mirror() -> None:
    out = StringIO()
    call_command("epilot_chaos", contacts=1500, opportunities=200, orders=50, latency_ms=20, conversions=2, stdout=out)
    report = out.getvalue()
    assert "worker killed with SIGKILL" in report
    for line in ("lost entities             0", "stale entities            0", "phantom entities          0",
                 "duplicates in epilot      0", "zero lost, zero duplicated"):
        assert line in report, report
