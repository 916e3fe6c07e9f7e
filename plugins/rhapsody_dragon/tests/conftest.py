"""Dragon tests run under the launcher; see the plugin README for the command."""

import os

os.environ.setdefault("DRAGON_DEFAULT_SEG_SZ", str(256 << 20))
os.environ.setdefault("DRAGON_INF_SEG_SZ", str(128 << 20))
