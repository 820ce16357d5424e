"""One module per stage; each core is a plain function over schemas.record.Record."""
