"""retape's pure core: formats, venues, books, checks, reports.

Nothing in this package imports Redis, HTTP clients or Celery; the edges live in
``producers`` (command line, cutting inputs) and ``workers`` (task wiring).
"""
