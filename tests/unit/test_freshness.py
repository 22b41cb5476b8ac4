from datetime import UTC, datetime, timedelta

from prodclone.freshness import freshness

NOW = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)


def test_todays_snapshot_is_fresh_and_yesterdays_is_stale_after_grace():
    assert not freshness(datetime(2026, 11, 21, 2, 20, tzinfo=UTC), "0 2 * * *", NOW)["stale"]
    late = freshness(datetime(2026, 11, 20, 2, 20, tzinfo=UTC), "0 2 * * *", NOW)
    assert late["stale"] and "older than the export schedule" in late["message"] and late["age_hours"] == 36.67


def test_a_run_in_progress_is_not_late_yet():
    early = NOW.replace(hour=3)  # the 02:00 run may still be exporting
    assert not freshness(datetime(2026, 11, 20, 2, 20, tzinfo=UTC), "0 2 * * *", early)["stale"]


def test_no_snapshot_and_no_schedule():
    assert freshness(None, "0 2 * * *", NOW)["stale"]
    assert not freshness(NOW - timedelta(days=30), None, NOW)["stale"]
