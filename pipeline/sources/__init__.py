"""Dataset sources: download, verify, extract, and read local folders."""
