"""gunicorn reads this file from the working directory: Quorum's settings live in serving.py."""

from serving import *  # noqa: F401,F403
