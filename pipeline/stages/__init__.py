"""One module per stage; each core is a plain function over schemas.record.Record.

extract.py belongs to the read stage (WARC/WAT records to rows) and image.py to the download
stage (the image rules applied to downloaded bytes); docs/architecture.md maps every module."""
