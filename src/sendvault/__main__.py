"""`python -m sendvault` runs the CLI (through the launcher, which starts a `scan ssh` early)."""

from ._launch import main

main()
