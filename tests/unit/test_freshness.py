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


def test_a_fresh_snapshots_age_reads_in_minutes_never_0_0h():
    assert freshness(NOW - timedelta(seconds=20), None, NOW)["message"] == "snapshot was made just now"
    assert freshness(NOW - timedelta(minutes=1), None, NOW)["message"] == "snapshot is 1 minute old"
    assert freshness(NOW - timedelta(minutes=25), None, NOW)["message"] == "snapshot is 25 minutes old"
    assert freshness(NOW - timedelta(hours=3, minutes=30), None, NOW)["message"] == "snapshot is 3.5h old"
