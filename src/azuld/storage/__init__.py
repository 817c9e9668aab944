"""Blob stores: `local` (a content-addressed folder) and, at scale, S3."""
