"""Subcommands of ``speaker-grouping`` that live in modules of their own (see cli.py)."""
