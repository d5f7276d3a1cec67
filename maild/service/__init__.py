"""The running service: one mail through the rules, and the loops around it.

- ``pipeline``   the orchestration of one mail, in one transaction
- ``outgoing``   every mail maild sends: rendered, limited (SPEC 11), threaded, queued
- ``steward``    a steward's mail: tags applied or held until confirmed, the relay
- ``operator``   the operator's commands (``maild set``, ``close``...)
- ``outcome``    what handling one mail did (``Outcome``, ``PlannedMail``)
- ``scheduler``  the periodic pass over what is due
- ``daemon``     ``maild run``: sources, scheduler, sender, signals, systemd
- ``lease``      which instance leads (several instances on one database)
- ``wakeup``     waking the sender when mail is queued
"""
