"""Offline data worlds: image sets generated from, or read out of, files that ship with installed packages."""
