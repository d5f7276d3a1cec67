"""The clock, driven by ``maild ingest --now`` and ``maild tick --now`` over simulated weeks."""

from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta
from email import policy
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import Factory, Instance, make_mail

CHICAGO = ZoneInfo("America/Chicago")
REQUEST_ID = "<req-1@pangeo.example>"


def ct(text: str) -> str:
    """A local Chicago time as ISO 8601 with its offset."""
    return datetime.fromisoformat(text).replace(tzinfo=CHICAGO).isoformat()


def sql(instance: Instance, query: str, *args: object) -> list[tuple[Any, ...]]:
    return instance.sql(query, *args)


def templates(instance: Instance) -> list[str]:
    return [r[0] for r in sql(instance, "select template from outbox order by id")]


def tick(instance: Instance, at: str) -> dict[str, Any]:
    data: dict[str, Any] = instance.ok("tick", "--json", "--now", at).json()
    return data


def steward(instance: Instance, subject: str, at: str, body: str = "Done.") -> None:
    instance.ingest(
        make_mail(
            frm="alice@example.org",
            subject=f"Re: [support #1] Hub is down {subject}",
            message_id=f"<s-{abs(hash((subject, at)))}@example.org>",
            in_reply_to=REQUEST_ID,
            body=body + "\n",
        ),
        "--now",
        at,
    )


@pytest.fixture
def clock(instance: Instance) -> Instance:
    text = instance.config.read_text().replace(
        'ranges = ["08:00-12:00", "13:00-17:00"]',
        'ranges = ["08:00-12:00", "13:00-17:00"]\nholidays = ["2026-12-07"]',
    )
    text = text.replace("[tickets]\n", '[tickets]\nauto_close_after = "8h"\n')
    instance.config.write_text(text)
    return instance


def test_friday_resolution_closes_on_tuesday_after_a_holiday_monday(clock: Instance) -> None:
    clock.ingest(make_mail(message_id=REQUEST_ID), "--now", ct("2026-12-04T10:00"))
    steward(clock, "[resolved]", ct("2026-12-04T15:00"), "Fixed, we restarted the proxy.")
    assert clock.show(1)["status"] == "resolved"
    # Fri 15-17 is 2 h, Mon 7 Dec is a holiday, Tue 8-12 and 13-15 make the other 6
    for at in ("2026-12-04T18:00", "2026-12-07T12:00", "2026-12-08T14:59"):
        tick(clock, ct(at))
        assert clock.show(1)["status"] == "resolved", at
    result = tick(clock, ct("2026-12-08T15:00"))
    assert clock.show(1)["status"] == "closed"
    assert any("closed" in a for a in result["actions"])
    assert templates(clock).count("closed") == 1
    [(raw,)] = sql(clock, "select raw from outbox where template = 'closed'")
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["To"].addresses[0].addr_spec == "rep@pangeo.example"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert "8 working hours" in msg.get_content()
    # a repeat of the same pass (a restart) sends nothing more
    tick(clock, ct("2026-12-08T15:00"))
    tick(clock, ct("2026-12-09T09:00"))
    assert templates(clock).count("closed") == 1


def test_requester_reply_stops_the_close_clock(clock: Instance) -> None:
    clock.ingest(make_mail(message_id=REQUEST_ID), "--now", ct("2026-12-04T10:00"))
    steward(clock, "[resolved]", ct("2026-12-04T15:00"))
    clock.ingest(
        make_mail(
            message_id="<still@pangeo.example>",
            subject="Re: [support #1] Hub is down",
            in_reply_to=REQUEST_ID,
            body="It is still down for me.\n",
        ),
        "--now",
        ct("2026-12-08T09:00"),
    )
    tick(clock, ct("2026-12-09T09:00"))
    assert clock.show(1)["status"] == "open"
    assert "closed" not in templates(clock)


def test_incident_updates_every_three_hours_through_the_night_and_dst(
    new_instance: Factory,
) -> None:
    instance = new_instance()
    start = datetime(2026, 10, 31, 20, 0, tzinfo=CHICAGO)  # DST ends at 02:00 on Nov 1
    instance.ingest(make_mail(message_id=REQUEST_ID), "--now", start.isoformat())
    steward(instance, "[incident] [ic=alice]", (start + timedelta(minutes=10)).isoformat(),
            "We are on it.")  # fmt: skip
    [(relay,)] = sql(instance, "select raw from outbox where template = 'relay'")
    assert b"Next update on this incident by" in relay
    # step in UTC: aware local arithmetic would skip the repeated hour of the DST change
    t = (start + timedelta(minutes=10)).astimezone(UTC)
    end = (start + timedelta(hours=16)).astimezone(UTC)
    while t <= end:
        tick(instance, t.isoformat())
        t += timedelta(minutes=15)
    rows = sql(
        instance,
        "select created_at, raw from outbox where template = 'incident_update' order by id",
    )
    times = [datetime.fromisoformat(r[0]) for r in rows]
    # 20:10 CDT + 3 h steps over 16 h of real time: 5 updates, exactly 3 h apart in real time
    assert len(times) == 5
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps == [timedelta(hours=3)] * 4, times
    for _, raw in rows:
        text = email.message_from_bytes(raw, policy=policy.default).get_body().get_content()  # type: ignore[union-attr]
        assert "Next update by" in text
    # the incident commander was nudged before updates with nothing new to say
    nudges = sql(instance, "select rcpt_tos from outbox where template = 'sla_reminder'")
    assert any("alice@example.org" in r[0] for r in nudges)


def test_relayed_reply_restarts_the_cadence_and_catch_up_sends_one(
    new_instance: Factory,
) -> None:
    instance = new_instance()
    start = datetime(2026, 11, 24, 9, 0, tzinfo=CHICAGO)
    instance.ingest(make_mail(message_id=REQUEST_ID), "--now", start.isoformat())
    steward(instance, "[incident]", start.isoformat(), "Investigating.")
    steward(instance, "", (start + timedelta(hours=2)).isoformat(), "Found it, fixing.")
    tick(instance, (start + timedelta(hours=3, minutes=1)).isoformat())
    assert templates(instance).count("incident_update") == 0  # the reply at +2 h counted
    # the daemon was down for ten hours: one catch-up update, not three
    tick(instance, (start + timedelta(hours=15)).isoformat())
    tick(instance, (start + timedelta(hours=15)).isoformat())
    assert templates(instance).count("incident_update") == 1
    steward(instance, "[resolved]", (start + timedelta(hours=16)).isoformat(), "All fixed.")
    assert templates(instance).count("incident_resolved") == 1
    tick(instance, (start + timedelta(hours=30)).isoformat())
    assert templates(instance).count("incident_update") == 1


def test_sla_warning_then_breach_once_each(new_instance: Factory) -> None:
    instance = new_instance()
    # triage is due 8 working hours after Monday 08:00: Monday 17:00; 75 % is at 15:00
    instance.ingest(make_mail(message_id=REQUEST_ID), "--now", ct("2026-11-23T08:00"))
    [ticket] = instance.queue("--now", ct("2026-11-23T08:00"))
    assert ticket["next_due"]["kind"] == "triage"
    assert datetime.fromisoformat(ticket["next_due"]["at"]) == datetime.fromisoformat(
        ct("2026-11-23T17:00")
    )
    assert ticket["next_due"]["breached"] is False
    tick(instance, ct("2026-11-23T14:59"))
    assert templates(instance).count("sla_reminder") == 0
    tick(instance, ct("2026-11-23T15:00"))
    tick(instance, ct("2026-11-23T15:30"))
    reminders = sql(instance, "select raw from outbox where template = 'sla_reminder'")
    assert len(reminders) == 1 and b"Due soon" in reminders[0][0]
    tick(instance, ct("2026-11-23T17:00"))
    tick(instance, ct("2026-11-23T17:00"))
    reminders = sql(instance, "select raw from outbox where template = 'sla_reminder'")
    assert len(reminders) == 2 and b"OVERDUE" in reminders[1][0]
    overdue = instance.queue("--overdue", "--now", ct("2026-11-23T17:01"))
    assert [t["id"] for t in overdue] == [1] and overdue[0]["next_due"]["breached"]
    stats = instance.ok("stats", "--json", "--now", ct("2026-11-24T09:00")).json()
    assert stats["sla_breaches"] == {"untriaged": 1}
    # triage stops the triage clock; first response is still owed
    steward(instance, "[guidance] [silent]", ct("2026-11-24T09:00"))
    [ticket] = instance.queue("--now", ct("2026-11-24T09:00"))
    assert ticket["next_due"]["kind"] == "first_response"


def test_roster_rotates_and_hands_over(new_instance: Factory) -> None:
    instance = new_instance()
    seen = []
    for day in ("2026-11-02", "2026-11-15", "2026-11-16", "2026-11-30", "2026-12-14"):
        data = instance.ok("roster", "--json", "--at", day).json()
        seen.append(data["on_duty"])
    assert seen == [
        ["alice", "bob"], ["alice", "bob"], ["bob", "carol"], ["carol", "alice"], ["alice", "bob"],
    ]  # fmt: skip
    data = instance.ok("roster", "--json", "--at", "2026-11-20").json()
    assert data["next_change"]["on_duty"] == ["carol", "alice"]
    assert datetime.fromisoformat(data["next_change"]["at"]) == datetime(
        2026, 11, 30, tzinfo=CHICAGO
    )
    instance.ingest(make_mail(message_id=REQUEST_ID), "--now", ct("2026-11-27T10:00"))
    tick(instance, ct("2026-11-29T23:00"))
    assert "handoff" not in templates(instance)
    result = tick(instance, ct("2026-11-30T00:05"))
    assert any("handoff" in a for a in result["actions"])
    [(rcpts, raw)] = sql(instance, "select rcpt_tos, raw from outbox where template = 'handoff'")
    assert "alice@example.org" in rcpts and "bob@example.org" in rcpts
    assert b"[support #1]" in raw
    tick(instance, ct("2026-11-30T00:10"))
    assert templates(instance).count("handoff") == 1


def test_budget_counts_time_on_non_incidents(new_instance: Factory) -> None:
    instance = new_instance()
    instance.ingest(make_mail(message_id=REQUEST_ID), "--now", ct("2026-11-23T10:00"))
    steward(instance, "[change] [time=1h30m] [silent]", ct("2026-11-23T11:00"))
    instance.ingest(
        make_mail(message_id="<inc@pangeo.example>", subject="Outage"),
        "--now",
        ct("2026-11-23T12:00"),
    )
    assert instance.ok("tag", "2", "[incident] [time=2h] [silent]", "--now",
                       ct("2026-11-23T12:30")).status == 0  # fmt: skip
    data = instance.ok("stats", "--json", "--now", ct("2026-11-25T12:00")).json()
    pangeo = next(b for b in data["budget"] if b["community"] == "pangeo")
    assert pangeo == {"community": "pangeo", "used_hours": 1.5, "budget_hours": 10,
                      "percent_used": 15.0, "warning": None}  # fmt: skip
    assert data["opened_this_week"] == 2 and data["opened_total"] == 2
