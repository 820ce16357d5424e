"""`openwit demo`: a synthetic web on 127.0.0.1, curated and trained on."""
