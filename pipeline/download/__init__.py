"""The HTTP side of the download stage: client, politeness, name resolution."""
