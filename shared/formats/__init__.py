"""Streaming readers for capture formats, recognised by content (see :mod:`shared.formats.detect`)."""
