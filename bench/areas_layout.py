"""Rollout areas laid out for a benchmark as a Stadtwerk has them: the opportunities' own addresses first, then
made-up ones."""
from __future__ import annotations

from collections.abc import Iterable


def lay_out_areas(keys: Iterable[str], areas: int, addresses: int) -> int:
    """`addresses` addresses in scope over `areas` areas: these address keys first (sorted, as many as fit), then
    made-up ones, with their figures computed from the mirror as it stands. Returns how many of `keys` are in scope."""
    from projects.mirror.addresses import address_key
    from projects.models import AreaAddress, RolloutArea
    from projects.services.areas import areas_refresh

    laid_out = sorted(set(keys) - {""})[:addresses]
    known = len(laid_out)
    laid_out += [address_key("42489", f"Neubaugebiet {n // 200}", str(n % 200 + 1)) for n in range(addresses - known)]
    made = [RolloutArea.objects.create(name=f"Ausbaugebiet {k + 1:02d}", quota_percent=40) for k in range(areas)]
    AreaAddress.objects.bulk_create([AreaAddress(area=made[n % areas], postal_code=key.split("|")[0], street=key.split("|")[1],
                                                 house_number=key.split("|")[2][:20], units=1 + n % 6, key=key)
                                     for n, key in enumerate(laid_out)], batch_size=5000)
    areas_refresh()
    return known
