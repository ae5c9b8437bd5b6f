"""Real-voice benchmark episodes, rebuilt at run time from freeware game data in Debian main.

The generated episodes speak with synthesisers; these speak with a professional voice cast. The
game data is downloaded with ``apt-get download`` into ``.cache/`` and never committed.
"""
