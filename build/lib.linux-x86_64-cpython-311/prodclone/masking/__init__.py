"""Masking: rules, transforms, the COPY-stream rewriter, coverage and leak checks."""
