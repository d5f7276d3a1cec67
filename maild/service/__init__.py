"""The running service: one mail through the rules, and the loops around it.

- ``pipeline``   the orchestration of one mail, in one transaction
- ``scheduler``  the periodic pass over what is due
- ``daemon``     ``maild run``: sources, scheduler, sender, signals, systemd
- ``lease``      which instance leads (several instances on one database)
- ``wakeup``     waking the sender when mail is queued
"""
