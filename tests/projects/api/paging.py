"""Walking a cursor-paginated list as a consumer does."""
from __future__ import annotations

from rest_framework.test import APIClient


def walk(api: APIClient, url: str) -> list[dict]:
    """Every item of a list, following `next` until there is none; each page must answer 200."""
    items = []
    while url:
        page = api.get(url)
        assert page.status_code == 200, page.json()
        items += page.json()["results"]
        url = page.json()["next"]
    return items
