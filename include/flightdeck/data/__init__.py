"""Data: batch generation, validation, quarantine and the DVC-tracked dataset in S3."""
