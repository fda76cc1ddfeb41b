"""The QA report (pure): thumbnails and a self-contained HTML page built from audit records."""
