"""The download stage's machinery: the HTTP client, address safety, politeness, name
resolution, and the staging of images and receipts."""
