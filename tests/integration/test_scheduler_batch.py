"""The scheduler handles its due tickets in batches: one transaction for many tickets.

What a batch must not change: a ticket that fails is put off alone while the
others' mail goes out, and SPEC 11's limits count every mail of the batch,
also the ones to the same address queued moments before in the same
transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tests.conftest import REPO, Factory, Instance, make_mail

CHICAGO = ZoneInfo("America/Chicago")
# a Monday; incident updates run around the clock, every 3 hours
START = datetime(2026, 11, 23, 9, 0, tzinfo=CHICAGO)


def at(minutes: int) -> str:
    return (START + timedelta(minutes=minutes)).isoformat()


def incidents(instance: Instance, n: int, every: int = 0) -> None:
    """``n`` requests from rep@pangeo.example, ``every`` minutes apart, then all made
    incidents by a steward at +3 h: each one's first update is due at +6 h."""
    for i in range(1, n + 1):
        instance.ingest(
            make_mail(subject=f"Problem {i}", message_id=f"<req-{i}@pangeo.example>"),
            "--now",
            at((i - 1) * every),
        )
    for i in range(1, n + 1):
        instance.ingest(
            make_mail(
                frm="alice@example.org",
                subject=f"Re: [support #{i}] Problem {i} [incident]",
                message_id=f"<inc-{i}@example.org>",
                in_reply_to=f"<req-{i}@pangeo.example>",
                body="We are on it.\n",
            ),
            "--now",
            at(180),
        )


def tick(instance: Instance, when: str) -> dict[str, Any]:
    data: dict[str, Any] = instance.ok("tick", "--json", "--now", when).json()
    return data


def updates(instance: Instance) -> list[tuple[Any, ...]]:
    return instance.sql(
        "select ticket_id, rcpt_tos from outbox where template = 'incident_update' order by id"
    )


def test_a_failing_ticket_is_put_off_alone_and_the_rest_of_the_batch_goes_out(
    new_instance: Factory, tmp_path: Path
) -> None:
    instance = new_instance()
    incidents(instance, 3)
    # an override of the update template that breaks on ticket 2 only
    overrides = tmp_path / "templates"
    overrides.mkdir()
    shipped = (REPO / "templates" / "incident_update.j2").read_text()
    broken = shipped.replace(
        "{% block text %}", "{% block text %}{% if ticket.id == 2 %}{{ no_such_name }}{% endif %}"
    )
    assert broken != shipped
    (overrides / "incident_update.j2").write_text(broken)
    config = instance.config.read_text()
    instance.config.write_text(config + f'\n[templates]\ndir = "{overrides}"\n')

    sent_on_2 = "select count(*) from events where ticket_id = 2 and kind = 'sent'"
    before = instance.sql(sent_on_2)
    result = tick(instance, at(361))
    assert [row[0] for row in updates(instance)] == [1, 3]
    assert "#2 failed, postponed" in result["actions"]
    assert "#1 incident update" in result["actions"]
    assert "#3 incident update" in result["actions"]
    assert "#2 incident update" not in result["actions"]
    # the batch was done without it: nothing of ticket 2's update was written
    assert instance.sql(sent_on_2) == before
    # the same pass again (a restart) sends nothing twice; #2 is put off for a while
    tick(instance, at(362))
    assert [row[0] for row in updates(instance)] == [1, 3]

    # the template fixed: ticket 2 gets its update at the next look
    instance.config.write_text(config)
    result = tick(instance, at(361 + 11))
    assert [row[0] for row in updates(instance)] == [1, 3, 2]
    assert result["actions"] == ["#2 incident update"]


def test_limits_count_the_mail_queued_earlier_in_the_same_batch(new_instance: Factory) -> None:
    # two automatic mails an hour per address: the three requests arrive an hour
    # apart so each is acknowledged, and the acks are hours old at the updates
    instance = new_instance(ack_rate=2)
    incidents(instance, 3, every=61)
    assert len(instance.sql("select id from outbox where template = 'ack'")) == 3

    result = tick(instance, at(361))
    # one batch, three updates due to the same address: the third is over the limit
    assert [row[0] for row in updates(instance)] == [1, 2]
    assert all(json_has(row[1], "rep@pangeo.example") for row in updates(instance))
    notes = instance.sql("select ticket_id, text from events where kind = 'note' order by id")
    refused = [(t, text) for t, text in notes if "incident_update" in (text or "")]
    assert len(refused) == 1 and refused[0][0] == 3, notes
    assert "already got 2 automatic mails this hour" in refused[0][1]
    assert "#3 incident update" in result["actions"]  # done, the mail left out
    assert instance.sql(
        "select count(*) from automatic_sends where address = 'rep@pangeo.example' "
        "and template = 'incident_update'"
    ) == [(2,)]


def json_has(text: str, address: str) -> bool:
    return f'"{address}"' in text


def _refuse_update_of(instance: Instance, ticket_id: int) -> None:
    """Make the store refuse the outbox row of one ticket's update, as PostgreSQL refuses
    a value too long for its column (22001, not a constraint): the batch's bulk write fails."""
    if instance.url.startswith("sqlite"):
        instance.sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON outbox "
            f"WHEN NEW.ticket_id = {ticket_id} AND NEW.template = 'incident_update' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the store'); END"
        )
        return
    instance.sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE string_data_right_truncation USING MESSAGE = 'refused by the store'; "
        "END $$"
    )
    instance.sql(
        "CREATE TRIGGER refuse BEFORE INSERT ON outbox FOR EACH ROW "
        f"WHEN (NEW.ticket_id = {ticket_id} AND NEW.template = 'incident_update') "
        "EXECUTE FUNCTION refuse()"
    )


def test_a_row_the_store_refuses_at_the_bulk_write_stops_no_other_ticket(
    new_instance: Factory,
) -> None:
    instance = new_instance()
    incidents(instance, 3)
    _refuse_update_of(instance, 2)

    result = tick(instance, at(361))
    # the batch failed as a whole at its bulk write: then one at a time, and only #2
    # is left without its update
    assert [row[0] for row in updates(instance)] == [1, 3]
    assert "#2 incident update" not in result["actions"]
    # put off like any failed ticket (SQLite calls a trigger's refusal an integrity
    # error, as if another pass had done #2: it must not be taken for one), so the
    # passes of the next minutes do not fail their batch on it again
    assert "#2 failed, postponed" in result["actions"]
    assert instance.sql("select next_action_at from tickets where id = 2") != [(None,)]
    assert tick(instance, at(362))["actions"] == []
    # and the next passes are not stuck on it either
    result = tick(instance, at(361 + 180))
    assert [row[0] for row in updates(instance)] == [1, 3, 1, 3]


def test_a_batch_writes_each_mail_with_its_rows_pointing_at_it(new_instance: Factory) -> None:
    # a batch keeps its messages as values and inserts them in bulk: each outbox row and
    # "sent" event must still name its own message, stored on its ticket in queue order
    instance = new_instance()
    incidents(instance, 3)
    tick(instance, at(361))
    linked = instance.sql(
        "select o.ticket_id, m.ticket_id, m.template, o.raw = m.raw, e.message_pk = m.id"
        " from outbox o join messages m on m.id = o.message_pk"
        " join events e on e.message_pk = m.id and e.kind = 'sent'"
        " where o.template = 'incident_update' order by o.id"
    )
    assert linked == [(t, t, "incident_update", 1, 1) for t in (1, 2, 3)]
    by_id = "select ticket_id from messages where template = 'incident_update' order by id"
    assert instance.sql(by_id) == [(1,), (2,), (3,)]
    # the next round, three hours on: one more update each, nothing sent twice
    tick(instance, at(361 + 181))
    assert instance.sql(by_id) == [(1,), (2,), (3,)] * 2
    assert [row[0] for row in updates(instance)] == [1, 2, 3] * 2
