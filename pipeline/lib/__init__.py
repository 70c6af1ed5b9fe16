"""Library code: no file-system or CLI knowledge."""
