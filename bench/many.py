"""The many-database cluster of issue 17: 50 databases, small to medium and one bigger, restored whole and the
biggest alone, so "a 50-database backup restores in about the time of its biggest database plus the
decompression" can be checked.

The databases reuse generate.py's three schemas: the biggest (`warehouse`) is an `events` database holding
BIGGEST_SHARE of the data; the others (`tenant_01`...) cycle through shop, crm and events schemas with sizes
falling as 1/rank^0.8 (a few medium, many small: 13 MB down to 1 MB for 200 MB over 50 databases). Sizes are of
the data (rows), approximate; each database also carries PostgreSQL's ~7.5 MB of catalog on disk, which no dump
holds. harness.py runs the cases (`--many-databases 50 --many-size 200MB`); this module plans the cluster and
reads the results.
"""

from __future__ import annotations

from generate import DATABASES, UNIT, Planned, scaled_counts
from report import CaseSummary, explain

BIGGEST = "warehouse"
BIGGEST_KIND = "events"
BIGGEST_SHARE = 0.3
TENANT_KINDS = ("shop", "crm", "shop", "events", "crm")
FALL = 0.8  # a tenant's size falls as 1 / (rank + 1) ** FALL
# share of a three-database cluster's data each schema holds (measured at 1 GB: events 39%)
KIND_SHARE = {"shop": 0.33, "events": 0.39, "crm": 0.28}

BIGGEST_PSQL = "biggest alone: gunzip -c | psql"
BIGGEST_PGDR = "pgdr restore split, biggest only"
DECOMPRESS = "decompress alone (pgdr's decoder)"


def scale_for(kind: str, data_bytes: float) -> float:
    """generate.py's scale (rows per 100 MB of a three-database cluster) giving one `kind` database this much data."""
    return data_bytes / (KIND_SHARE[kind] * UNIT)


def plan(count: int, total: int) -> list[Planned]:
    """count databases holding about `total` bytes of data: the biggest first, then the tenants by falling size."""
    weights = [1 / (rank + 1) ** FALL for rank in range(1, count)]
    rest = total * (1 - BIGGEST_SHARE) if count > 1 else 0
    planned = [Planned(BIGGEST, BIGGEST_KIND, round(total - rest), scaled_counts(scale_for(BIGGEST_KIND,
                                                                                           total - rest)))]
    for rank, weight in enumerate(weights, 1):
        kind, data_bytes = TENANT_KINDS[(rank - 1) % len(TENANT_KINDS)], rest * weight / sum(weights)
        planned.append(Planned(f"tenant_{rank:02d}", kind, round(data_bytes), scaled_counts(scale_for(kind,
                                                                                                        data_bytes))))
    return planned


def verify_tables(planned: list[Planned]) -> tuple[tuple[str, str], ...]:
    """Tables whose row counts prove a restore: the biggest database's largest table, the first and last tenant's."""
    chosen = [planned[0], *planned[1:2], *planned[-1:]] if len(planned) > 1 else planned
    return tuple(dict.fromkeys((item.name, DATABASES[item.kind][-1].name) for item in chosen))


def biggest_tables(planned: list[Planned]) -> tuple[tuple[str, str], ...]:
    return tuple((BIGGEST, table.name) for table in DATABASES[BIGGEST_KIND])


def checks(summaries: list[CaseSummary]) -> list[dict[str, object]]:
    """Issue 17's "about the time of its biggest database plus the decompression", as ratios (no tolerance stated):
    the plain restore against the biggest database restored alone by psql plus pgdr's decoding of the whole backup,
    and the split restore against pgdr restoring the biggest database alone from the same split backup. Each with
    the bottleneck of the whole restore."""
    by_name = {entry.name: entry for entry in summaries}
    walls = {entry.name: entry.wall_s for entry in summaries}
    found: list[dict[str, object]] = []
    plain, split = walls.get("pgdr restore gzip"), walls.get("pgdr restore split")
    biggest, decompress, biggest_split = walls.get(BIGGEST_PSQL), walls.get(DECOMPRESS), walls.get(BIGGEST_PGDR)
    if plain and biggest and decompress:
        bound = biggest + decompress
        found.append(_against("pgdr restore gzip", plain, bound,
                              f"pgdr restore gzip (plain, all databases) {plain:.1f} s against the biggest alone "
                              f"(gunzip | psql) {biggest:.1f} s + decompression {decompress:.1f} s = {bound:.1f} s"))
    if split and biggest_split:
        found.append(_against("pgdr restore split", split, biggest_split,
                              f"pgdr restore split (all databases) {split:.1f} s against the biggest alone "
                              f"(pgdr restore split --database {BIGGEST}) {biggest_split:.1f} s"))
    for item in found:
        item["bottleneck"] = explain(by_name[str(item["case"])])
    return found


def text(found: list[dict[str, object]]) -> str:
    lines = ["Issue 17: a many-database backup restores in about the time of its biggest database plus the "
             "decompression (no tolerance stated: ratios)"]
    for item in found:
        lines += [f"  {item['text']}", f"          -> {item['bottleneck']}"]
    if not found:
        lines.append("  (cases missing: see the failures above)")
    return "\n".join(lines)


def _against(case: str, measured: float, bound: float, text: str) -> dict[str, object]:
    """One many-database ratio: a whole restore's time against the bound it should be near."""
    return {"case": case, "measured_s": round(measured, 2), "bound_s": round(bound, 2),
            "ratio": round(measured / bound, 2), "text": f"{text}: {measured / bound:.2f}x"}
