# The SDK imports pathlib2, which Debian does not package; the standard
# library's pathlib is what it needs on Python 3.
from pathlib import *  # noqa: F401,F403
from pathlib import Path, PurePath  # noqa: F401
