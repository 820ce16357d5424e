"""`openwit curate`: run a curation, dry runs, and later retries and extensions."""
