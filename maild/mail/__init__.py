"""The mail edges: how mail comes in and goes out.

- ``imap``    the IMAP source: ``codec`` (wire format), ``connection`` (the aioimaplib
              session, IDLE), ``sync`` (fetch, hand over, mark processed)
- ``lmtp``    the inbound LMTP listener
- ``authn``   DKIM, Authentication-Results and DMARC alignment (SPEC 11)
- ``render``  templates into the bytes of outgoing mail
- ``outbox``  the sender: durable outbox rows out over SMTP
"""
