"""The bottom layer: small helpers every other package may use, importing nothing of ours.

- `foundation.atomic`: atomic, durable file writes.
- `foundation.hook`: the progress ``Hook`` protocol (the CLI draws the bars).
- `foundation.options`: options given as a dataclass or a dict, checked one way.
- `foundation.layout`: the episode folder's file names, line ids and media URLs.
- `foundation.label_studio`: the one HTTP client for Label Studio.

The import contract in ``pyproject.toml`` (``make lint``) keeps this package at the bottom.
"""
