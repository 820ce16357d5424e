"""Tools that answer from (and amend) a finished output: summary, trace, verify, report, Croissant, takedown, eval hashes."""
