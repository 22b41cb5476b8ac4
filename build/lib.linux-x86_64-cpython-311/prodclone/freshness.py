"""How old the base snapshot is, against how old the export schedule allows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

GRACE = timedelta(hours=3)  # an export takes time: a run still in progress is not late yet


def freshness(created_at: datetime | None, schedule: str | None, now: datetime | None = None) -> dict:
    """{"age_hours", "max_age_hours", "stale", "message"} for the newest ready snapshot."""
    now = now or datetime.now(UTC)
    if created_at is None:
        return {"age_hours": None, "max_age_hours": None, "stale": True,
                "message": "no snapshot yet: run prodclone_export"}
    age = now - created_at
    max_age = None
    if schedule:
        from croniter import croniter

        it = croniter(schedule, now)
        last = it.get_prev(datetime)
        # The newest snapshot should come from the last scheduled run, once it has had time to finish.
        expected = last if now - last > GRACE else it.get_prev(datetime)
        max_age = now - expected
    stale = max_age is not None and age > max_age
    hours = age.total_seconds() / 3600
    message = f"snapshot is {hours:.1f}h old"
    if stale:
        message += (f", older than the export schedule ({schedule}) allows: the last exports failed or did not "
                    f"run. Restores keep using this snapshot; check prodclone_export.")
    return {"age_hours": round(hours, 2), "max_age_hours": round(max_age.total_seconds() / 3600, 2) if max_age else None,
            "stale": stale, "message": message}
