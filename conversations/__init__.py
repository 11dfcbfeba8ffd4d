"""Finished conversations: the record, download and analysis, the archive and event callbacks."""
