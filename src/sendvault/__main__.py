"""`python -m sendvault` runs the CLI."""

from .cli import main

main()
