"""The one cache: where it lives, which folders may hold it, its entries and fetch-if-missing.

Layout under the cache home (``cache_dir`` argument > ``$CAFFE_COMPAT_HOME`` >
``~/.cache/caffe-compat``): ``<home>/<model>/<file>`` for a zoo model's released files,
``<home>/<model>/converted/`` for their parsed arrays, ``<home>/dnn/`` for the ONNX conversions
of ``caffe_compat.dnn``, and ``<home>/.cache-key``, the secret that signs every entry.

Trust. A cache entry (``entries``) is a payload file and a JSON record naming the identities
(size + SHA-256) of the files it was made from, the payload's own size and SHA-256, and an HMAC
of all that under the home's key. An entry is served only when the record's signature, the
sources' identities (computed on every load) and the payload's hash all match, so an entry
copied from another net, edited, truncated or written by anything but this package is rebuilt,
never served. The key (mode 0600) keeps a writer who rewrites a payload and its record alike from
vouching for it; a process of the same user that reads the key can forge entries, but it could
as well edit this package. Folders that others could change (symbolic links, group- or
world-writable folders, folders of another user) are refused with one line, as ssh refuses such
keys (``home``).

Reporting: through the ``caffe_compat.cache`` logger, never ``warnings``: a damaged entry or an
unwritable cache is nothing the calling code can fix, so it is noted (one warning per event) and
the work goes on; the CLI shows warnings by default. A refused folder is a
:class:`~caffe_compat.errors.CaffeCompatError` (exit 2): the user must act.
"""

from __future__ import annotations

from .entries import Entry, entry_stem, load_entry, store_entry
from .fetch import Fetch, Obtained, check_identity, obtain, where_to_get
from .home import ENV_HOME, UnsafeCacheError, cache_home, checked_folder

__all__ = [
    "ENV_HOME",
    "Entry",
    "Fetch",
    "Obtained",
    "UnsafeCacheError",
    "cache_home",
    "check_identity",
    "checked_folder",
    "entry_stem",
    "load_entry",
    "obtain",
    "store_entry",
    "where_to_get",
]
