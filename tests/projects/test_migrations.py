"""Data migrations carry what was there before: the provisioned automation becomes the first recipe, steps become rows."""
from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("projects", "0006_steps_permissions_and_digest")]


@pytest.fixture
def migrate_to(transactional_db):
    """Migrate the test database to a target and give its historical models; back to the newest afterwards."""
    def go(target: list[tuple[str, str]]):
        executor = MigrationExecutor(connection)
        executor.migrate(target)
        executor.loader.build_graph()
        return executor.loader.project_state(target).apps
    yield go
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_the_provisioned_automation_becomes_the_first_recipe_with_its_flow(migrate_to) -> None:
    old_apps = migrate_to(BEFORE)
    old_apps.get_model("projects", "ProvisionedAutomation").objects.create(
        name="Ausbau Backoffice: Opportunity in Bearbeitung → Ausbau Glasfaser", flow_id="flow-from-2025",
        schema="opportunity", attribute="status", value="bearbeitung", definition_epilot_id="wfQpwhJF6J", enabled=True,
        provisioned_at=timezone.now())

    new_apps = migrate_to([("projects", "0007_automation_recipes")])

    (recipe,) = new_apps.get_model("projects", "AutomationRecipe").objects.all()
    assert recipe.flow_id == "flow-from-2025" and recipe.pattern == "status_change" and recipe.value == "bearbeitung"
    assert recipe.legacy_names == ["Ausbau Backoffice: Opportunity in Bearbeitung → Ausbau Glasfaser"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigram indexes are PostgreSQL's")
def test_a_trigram_index_the_release_before_left_set_aside_is_built_by_the_upgrade(migrate_to) -> None:
    migrate_to([("projects", "0033_drop_pattern_indexes_of_written_ids")])
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
        if cursor.fetchone() is None:
            pytest.skip("this PostgreSQL server has no pg_trgm")
        cursor.execute("DROP INDEX projects_order_search_trgm")  # as a first sync killed mid-pass left it

    migrate_to([("projects", "0034_sync_state_indexes_set_aside")])

    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'projects_order_search_trgm'")
        (definition,) = cursor.fetchone()
    assert "gin_trgm_ops" in definition and "gin_pending_list_limit='65536'" in definition
