"""The pure core: every rule of maild, with no I/O.

Nothing here imports SQLAlchemy or asyncio, reads a socket or a clock: the
time is a parameter. Where to look for a rule:

- ``inbound``       parsing a raw mail into plain values (``InboundMail``)
- ``intake``        that parse as ingest needs it (size limit, errors as values)
- ``classify``      who sent it, and may we answer it automatically
- ``conversation``  threading: which ticket a mail belongs to, follow-ups
- ``subjects``      ticket references and reply prefixes in subjects
- ``tags``          the subject-command grammar (SPEC 7)
- ``commands``      what a steward's tags do to a ticket, on plain values
- ``vocabulary``    the words a ticket's status, type and priority take
- ``lifecycle``     every status change (one table), its time stamps, the SLA clock
- ``workhours``     working-hours arithmetic over calendars and holidays
- ``roster``        who is on duty
- ``policy``        who is on a ticket, whom maild mails, the limits (SPEC 11)
- ``routing``       which stewards get a requester's reply
- ``replychain``    In-Reply-To/References of the mail we send
- ``quotes``, ``htmltext``  what is new in a reply, as stewards see it
- ``durations``     the one duration syntax (config, tags, messages)
- ``mailpolicy``    the ``email`` policy shared by parsing and rendering
- ``backoff``       how long every retrying loop waits after n failures in a row
"""
