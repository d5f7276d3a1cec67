"""The scheduler's weekly report and budget warnings, driven by ``maild tick --now``
across week and month boundaries (issue 14)."""

from __future__ import annotations

import email
import json
from datetime import datetime
from email import policy
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import Instance, make_mail

CHICAGO = ZoneInfo("America/Chicago")


def ct(text: str) -> str:
    return datetime.fromisoformat(text).replace(tzinfo=CHICAGO).isoformat()


def tick(instance: Instance, at: str) -> dict[str, Any]:
    data: dict[str, Any] = instance.ok("tick", "--json", "--now", ct(at)).json()
    return data


def sent(instance: Instance, template: str) -> list[EmailMessage]:
    rows = instance.sql("select raw from outbox where template = ? order by id", template)
    return [email.message_from_bytes(r[0], policy=policy.default) for r in rows]  # type: ignore[misc]


def envelope(instance: Instance, template: str) -> list[set[str]]:
    rows = instance.sql("select rcpt_tos from outbox where template = ? order by id", template)
    return [set(json.loads(r[0])) for r in rows]


def log_time(instance: Instance, ticket: int, duration: str, at: str) -> None:
    instance.ok("tag", str(ticket), f"[time={duration}]", "--now", ct(at))


def budget(instance: Instance, at: str) -> dict[str, Any]:
    rows = instance.ok("stats", "--json", "--now", ct(at)).json()["budget"]
    row: dict[str, Any] = next(r for r in rows if r["community"] == "pangeo")
    return row


@pytest.fixture
def guidance(instance: Instance) -> Instance:
    instance.ingest(make_mail(message_id="<q-1@pangeo.example>", subject="Quota for a workshop"),
                    "--now", ct("2026-11-20T10:00"))  # fmt: skip
    instance.ok("tag", "1", "[guidance]", "--now", ct("2026-11-20T10:05"))
    return instance


def test_budget_warnings_at_80_and_100_percent_once_each_per_month(guidance: Instance) -> None:
    log_time(guidance, 1, "7h", "2026-11-24T10:00")
    tick(guidance, "2026-11-24T10:05")
    assert sent(guidance, "budget_warning") == []
    assert budget(guidance, "2026-11-24T10:05")["warning"] is None

    log_time(guidance, 1, "1h", "2026-11-25T10:00")  # 8 of 10 hours
    result = tick(guidance, "2026-11-25T10:05")
    assert "budget warning: pangeo 80%" in result["actions"]
    [warning] = sent(guidance, "budget_warning")
    assert warning["Subject"] == "[support] Budget: pangeo has used 80% of its 2026-11 hours"
    assert "8.0 h of its 10.0 h support budget for 2026-11 (80.0 %)" in warning.get_content()
    # the stewards on duty on 25 Nov are bob and carol
    assert envelope(guidance, "budget_warning") == [{"bob@example.org", "carol@example.org"}]
    for at in ("2026-11-25T10:06", "2026-11-26T09:00"):
        tick(guidance, at)
    assert len(sent(guidance, "budget_warning")) == 1
    row = budget(guidance, "2026-11-26T09:00")
    assert (row["percent_used"], row["warning"]) == (80.0, "80%")
    text = guidance.ok("stats", "--now", ct("2026-11-26T09:00")).out
    assert (
        "budget pangeo: 8.0 h of 10.0 h, 2.0 h left, 80.0 % used  ** past 80% of the budget **"
        in text
    )

    log_time(guidance, 1, "2h30m", "2026-11-27T10:00")
    tick(guidance, "2026-11-27T10:05")
    tick(guidance, "2026-11-27T10:06")
    assert [m["Subject"].split()[-5] for m in sent(guidance, "budget_warning")] == ["80%", "100%"]
    assert "The budget is used up" in sent(guidance, "budget_warning")[1].get_content()

    # a new month starts from nothing: no warning until it is passed again
    tick(guidance, "2026-12-01T09:00")
    assert budget(guidance, "2026-12-01T09:00")["warning"] is None
    assert len(sent(guidance, "budget_warning")) == 2
    # passing both thresholds at once says so in one mail, and only once
    log_time(guidance, 1, "11h", "2026-12-02T10:00")
    tick(guidance, "2026-12-02T10:05")
    tick(guidance, "2026-12-03T10:05")
    subjects = [m["Subject"] for m in sent(guidance, "budget_warning")]
    assert subjects[2:] == ["[support] Budget: pangeo has used 100% of its 2026-12 hours"]


def test_incident_time_does_not_draw_on_the_budget(instance: Instance) -> None:
    instance.ingest(make_mail(message_id="<i-1@pangeo.example>"), "--now", ct("2026-11-24T10:00"))
    instance.ok("tag", "1", "[incident] [time=12h]", "--now", ct("2026-11-24T11:00"))
    tick(instance, "2026-11-24T11:05")
    assert sent(instance, "budget_warning") == []


@pytest.fixture
def weekly(instance: Instance) -> Instance:
    text = instance.config.read_text()
    instance.config.write_text(
        text + '\n[reports]\nweekly = "mon 09:00"\n\n[incidents]\npostmortem_mail = true\n'
    )
    return instance


def _week_of_work(instance: Instance) -> None:
    """Two incidents (one with a post-mortem) and a request using 8.5 h of pangeo's budget."""
    instance.ingest(make_mail(message_id="<i-1@pangeo.example>", subject="Hub is down"),
                    "--now", ct("2026-11-24T10:00"))  # fmt: skip
    instance.ok("tag", "1", "[incident] [ic=alice]", "--now", ct("2026-11-24T10:10"))
    instance.ok("resolve", "1", "--now", ct("2026-11-24T12:00"))
    instance.ingest(make_mail(message_id="<i-2@jupyter.example>", frm="lead@jupyter.example",
                              subject="Kernels die"), "--now", ct("2026-11-25T10:00"))  # fmt: skip
    instance.ok("tag", "2", "[incident]", "--now", ct("2026-11-25T10:10"))
    instance.ingest(make_mail(message_id="<q-1@pangeo.example>", subject="Quota please"),
                    "--now", ct("2026-11-26T10:00"))  # fmt: skip
    instance.ok("tag", "3", "[guidance] [time=8h30m]", "--now", ct("2026-11-26T11:00"))


def test_the_weekly_report_goes_once_a_week_and_once_after_downtime(weekly: Instance) -> None:
    _week_of_work(weekly)
    # a first pass of a new installation starts counting; the past week is not reported
    tick(weekly, "2026-11-30T08:59")
    assert sent(weekly, "weekly_report") == []

    result = tick(weekly, "2026-11-30T09:00")
    assert any(a.startswith("weekly report") for a in result["actions"])
    [report] = sent(weekly, "weekly_report")
    assert envelope(weekly, "weekly_report") == [
        {"alice@example.org", "bob@example.org", "carol@example.org"}
    ]
    assert report["Auto-Submitted"] == "auto-generated"
    assert report["Subject"] == "[support] Weekly report to Mon 2026-11-30 09:00 CST"
    text = report.get_content()
    assert "The support week from Mon 2026-11-23 09:00 CST to Mon 2026-11-30 09:00 CST" in text
    assert "Tickets: 3 opened and 0 closed this week" in text
    assert "pangeo: 8.5 h of 10.0 h (85.0 % used), past 80%" in text
    assert "jupyter: 0.0 h (no budget)" in text
    assert "[support #1] Hub is down (resolved, opened Tue 2026-11-24 10:00 CST): " \
        "post-mortem written" in text  # fmt: skip
    assert "[support #2] Kernels die (new, opened Wed 2026-11-25 10:00 CST): " \
        "no post-mortem yet" in text  # fmt: skip
    assert "Quota please" not in text  # not an incident

    # the same pass again, later that week: nothing more
    for at in ("2026-11-30T09:00", "2026-11-30T17:00", "2026-12-04T09:00"):
        tick(weekly, at)
    assert len(sent(weekly, "weekly_report")) == 1

    # down from before 7 Dec until 16 Dec: one report, late, for the week to 14 Dec
    result = tick(weekly, "2026-12-16T10:00")
    assert "weekly report for Mon 2026-12-14 09:00 CST (late)" in result["actions"]
    tick(weekly, "2026-12-16T10:01")
    reports = sent(weekly, "weekly_report")
    assert len(reports) == 2
    assert reports[1]["Subject"] == "[support] Weekly report to Mon 2026-12-14 09:00 CST"
    assert "from Mon 2026-12-07 09:00 CST to Mon 2026-12-14" in reports[1].get_content()

    tick(weekly, "2026-12-21T09:00")
    assert len(sent(weekly, "weekly_report")) == 3


def test_no_weekly_report_without_the_key_or_with_it_empty(instance: Instance) -> None:
    tick(instance, "2026-11-30T09:00")
    text = instance.config.read_text()
    instance.config.write_text(text + '\n[reports]\nweekly = ""\n')
    tick(instance, "2026-12-07T09:00")
    assert sent(instance, "weekly_report") == []


@pytest.mark.parametrize("value", ["monday", "mon 9", "mon 25:00", "someday 09:00", "mon 09:00 x"])
def test_a_bad_weekly_time_is_a_config_error(instance: Instance, value: str) -> None:
    text = instance.config.read_text()
    instance.config.write_text(text + f'\n[reports]\nweekly = "{value}"\n')
    result = instance.cli("check-config")
    assert result.status == 1
    assert "reports.weekly: expected a weekday and a local time" in result.err
