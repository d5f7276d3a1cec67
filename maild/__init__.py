"""maild: an email-driven helpdesk daemon."""
